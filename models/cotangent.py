"""An identity whose backward pass computes its cotangent once (issue 26 item 6).

In the backward of a network, XLA:CPU fuses the long elementwise chain that produces a layer output's
cotangent (GroupNorm and SiLU backward, residual sums) into every consumer of that cotangent (the
bias-gradient reduction, the input- and kernel-gradient operands, sibling fusions) and recomputes it in each
(benchmarks/results/profile_step.md). A dot is an operation XLA does not fuse its producers into: passing
the cotangent through a product with the identity matrix makes XLA compute it once, write it to memory and
let its consumers read it (benchmarks/results/cotangent_barrier.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def materialise_cotangent(y: jax.Array) -> jax.Array:
  """The identity on ``y`` [..., C]; its VJP passes the cotangent through a product with the C x C identity.

  Values and gradients are unchanged (products with 1 and sums with 0 are exact); the cotangent is computed
  once and read by all its consumers (module docstring). Cost: C multiply-adds per element, against 9 C for a
  3x3 convolution's input gradient.
  """
  return y


def _materialise_fwd(y):
  return y, None


def _materialise_bwd(_, g):
  return (jnp.einsum("...c,cd->...d", g, jnp.eye(g.shape[-1], dtype=g.dtype)),)


materialise_cotangent.defvjp(_materialise_fwd, _materialise_bwd)
