"""Helpers shared by the samplers: option checks, per-sample noise, Tweedie denoising."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sde_lib import SDE, ScoreFn, batch_broadcast, checks


def check_shape(shape) -> tuple[int, ...]:
  """A sample shape [B, ...] with a batch axis and at least one data axis, all positive ints."""
  shape = tuple(shape)
  if len(shape) < 2 or not all(isinstance(d, int) and d > 0 for d in shape):
    raise ValueError(f"shape must be [batch, *data_dims] with positive integers, got {shape!r}")
  return shape


check_steps = checks.check_positive_int
check_positive = checks.check_positive
check_choice = checks.check_choice


def check_t_min(sde: SDE, t_min) -> float:
  """The time floor: a number in (0, T)."""
  return checks.check_time("t_min", t_min, sde.T)


def sigma_range(sde: SDE, t_min: float, sigma_floor: float) -> tuple[jax.Array, jax.Array]:
  """(sigma(T), max(sigma_floor, sigma(t_min))): the noise levels a sigma-grid sampler spans.

  The floor keeps steps off noise levels too small to matter (sub-VP's sigma(1e-3) is ~1e-4).
  """
  return sde.sigma(jnp.asarray(sde.T)), jnp.maximum(sigma_floor, sde.sigma(jnp.asarray(t_min)))


def per_sample_keys(key: jax.Array, batch: int) -> jax.Array:
  """Key b = fold_in(key, b): sample b's randomness does not depend on the batch size (as EDM)."""
  return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def per_sample_normal(keys: jax.Array, step, shape) -> jax.Array:
  """Standard normal noise [B, ...] drawn from each sample's own key folded with ``step``."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), tuple(shape[1:])))(keys)


def full_time(t, batch: int) -> jax.Array:
  """A scalar time broadcast to the [B] vector the score functions take: float32, or float64 when ``t`` is
  (under ``jax.enable_x64``, e.g. a float64 ODE solve's time, which float32 would round)."""
  return jnp.full((batch,), t, dtype=jnp.result_type(t, jnp.float32))


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
  """E[x(0) | x(t)] = (x + s^2 score) / a (Tweedie's formula; Efron 2011, seed 004). One NFE.

  The one denoiser of every sampler: in the scaled variable x_hat = x / a with sigma = s / a it is
  EDM's D(x_hat; sigma) = x_hat + sigma^2 a score(a x_hat, t) (``scaled_denoiser``).
  """
  a, s = sde.marginal_coefs(t)
  return (x + batch_broadcast(jnp.square(s), x) * score_fn(x, t)) / batch_broadcast(a, x)


def scaled_denoiser(sde: SDE, score_fn: ScoreFn, batch: int):
  """``D(x_hat [B, ...], sigma scalar) -> [B, ...]``: ``tweedie_denoise`` of x = a x_hat at t(sigma)."""

  def denoise(x_hat, sigma):
    t = full_time(sde.t_from_sigma(sigma), batch)
    return tweedie_denoise(sde, score_fn, batch_broadcast(sde.marginal_coefs(t)[0], x_hat) * x_hat, t)

  return denoise


# Field checks of the options every sampler shares (``sde_lib.checks``): the time floor is checked against
# the SDE's T again by the builder (``check_t_min``).
TIME_FLOOR = checks.number(0.0, 1.0, open_lo=True, open_hi=True)
POSITIVE_FLOAT = checks.number(0.0, open_lo=True)
