"""What a network can predict at (x(t), t), and the conversions between them, for any process
x(t) = a(t) x(0) + s(t) z (``SDE.marginal_rates``): the one place they are written.

* score    grad log p_t(x) = -E[z | x] / s                                        (Vincent 2011)
* noise    eps = E[z | x] = -s score
* denoised x0 = E[x(0) | x] = (x + s^2 score) / a                                 (Tweedie)
* velocity v = E[a' x(0) + s' z | x], the probability-flow drift dx/dt
                                      (Lipman et al. 2023, sec. 4; Salimans & Ho 2022's v for VP up to a factor)

With c = a s' - a' s = a^2 d(s/a)/dt > 0, solving x = a x0 + s eps and v = a' x0 + s' eps for eps gives
    eps = (a v - a' x) / c,        x0 = (s' x - s v) / c,
finite wherever c > 0, also at a = 0 (rectified flow at t = 1: eps = x, x0 = x - v). Conversely
v = a' x0 + s' eps with x0 from Tweedie needs a > 0: a score at a = 0 says nothing about the data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sde_lib.base import SDE, batch_broadcast


def _rates(sde: SDE, t: jax.Array, x: jax.Array):
  a, s, da, ds = sde.marginal_rates(t)
  return tuple(batch_broadcast(v, x) for v in (a, s, da, ds))


def _noise(rates, x, v):
  a, s, da, ds = rates
  return (a * v - da * x) / (a * ds - da * s)


def noise_from_velocity(sde: SDE, x: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
  """eps = (a v - a' x) / (a s' - a' s): x, v [B, ...], t [B]."""
  return _noise(_rates(sde, t, x), x, v)


def score_from_velocity(sde: SDE, x: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
  """score = -eps / s with eps from ``noise_from_velocity`` (one evaluation of the schedule's rates)."""
  rates = _rates(sde, t, x)
  return -_noise(rates, x, v) / rates[1]


def velocity_from_score(sde: SDE, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
  """v = a' x0 + s' eps with eps = -s score and x0 = (x + s^2 score) / a (needs a > 0)."""
  a, s, da, ds = _rates(sde, t, x)
  return da * (x + jnp.square(s) * score) / a - ds * s * score


def denoised_from_score(sde: SDE, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
  """Tweedie's x0 = (x + s^2 score) / a."""
  a, s = (batch_broadcast(v, x) for v in sde.marginal_coefs(t))
  return (x + jnp.square(s) * score) / a


def velocity_weight(sde: SDE, t: jax.Array) -> jax.Array:
  """w(t) = ((a s' - a' s) / a)^2, [B]: |v_theta - v|^2 = w |s score_theta + z|^2 for x(t) = a x0 + s z, so the
  conditional flow-matching loss is denoising score matching with lambda(t) = s^2 w (``sde_lib.losses``)."""
  a, s, da, ds = sde.marginal_rates(t)
  return jnp.square((a * ds - da * s) / a)
