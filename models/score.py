"""Turning a network into a score function ``score_fn(x, t)``: the parameterisations.

``"reference"`` is score_sde's (``models/utils.py``): on VP and sub-VP the network predicts the noise
and score = -output / s(t); on VE it predicts the score, divided by sigma when ``scale_by_sigma``
(score_sde divides inside the network; here the network stays SDE-agnostic and the division is
done below -- the same function). ``"epsilon"`` takes that noise prediction on every SDE.
``"edm"`` is Karras et al.'s preconditioning (2022, Table 1) in the scaled variable x / a(t).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sde_lib import SDE, batch_broadcast

# score_sde's continuous VP labels: t in [0, 1] stretched to DDPM's 1000-step range [0, 999].
VP_CONTINUOUS_LABEL_SCALE = 999.0
PARAMETERIZATIONS = ("reference", "epsilon", "edm")


def noise_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
  """The label a network is conditioned on at time t ([B] -> [B]).

  Continuous: sigma(t) on VE (embedded as log sigma by Fourier features), 999 t otherwise.
  Discrete: the ladder index round((N - 1) t / T) (score_sde's VE counts it from the other end,
  sigma_max first; a network trained here sees the index of ``sde.discrete_coefs``).
  """
  if not continuous:
    return sde.discrete_index(t).astype(jnp.float32)
  return sde.sigma(t) if sde.variance_exploding else VP_CONTINUOUS_LABEL_SCALE * t


def get_score_fn(sde: SDE, apply_fn: Callable, params, *, continuous: bool = True,
                 parameterization: str = "reference", scale_by_sigma: bool = False, sigma_data: float = 0.5,
                 train: bool = False, rngs=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A ``score_fn(x [B, ...], t [B]) -> [B, ...]`` from ``apply_fn(params, x, labels, train, rngs)``.

  Arguments:
    continuous: labels and noise scales from the continuous SDE (else from its N-level ladder).
    parameterization: one of ``PARAMETERIZATIONS`` (see the module docstring).
    scale_by_sigma: (reference, VE) divide the network output by the noise level.
    sigma_data: (edm) the data standard deviation of the preconditioning.
    train, rngs: passed to apply_fn (dropout during training).

  Raises:
    ValueError: an unknown parameterization.
  """
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(f"parameterization must be one of {list(PARAMETERIZATIONS)}, got {parameterization!r}")
  coefs = sde.marginal_coefs if continuous else sde.discrete_marginal

  def network(x, t):
    return apply_fn(params, x, noise_labels(sde, t, continuous), train, rngs)

  def score_fn(x, t):
    a, s = coefs(t)
    if parameterization == "edm":
      # D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat), score = (D - x_hat) / (sigma^2 a)   (EDM Table 1),
      # with c_skip - 1 = -sigma^2 / (sigma^2 + sigma_data^2) in closed form: no cancellation at small sigma.
      sigma = s / a
      x_hat = x / batch_broadcast(a, x)
      norm2 = jnp.square(sigma) + sigma_data**2
      c_out, c_in = sigma * sigma_data / jnp.sqrt(norm2), 1.0 / jnp.sqrt(norm2)
      out = apply_fn(params, batch_broadcast(c_in, x) * x_hat, noise_labels(sde, t, continuous), train, rngs)
      residual = -batch_broadcast(jnp.square(sigma) / norm2, x) * x_hat + batch_broadcast(c_out, x) * out   # D - x_hat
      return residual / batch_broadcast(jnp.square(sigma) * a, x)
    out = network(x, t)
    if parameterization == "epsilon" or not sde.variance_exploding:
      return -out / batch_broadcast(s, x)                                  # eps-prediction: score = -eps / s
    return out / batch_broadcast(s, x) if scale_by_sigma else out          # VE: s = sigma

  return score_fn
