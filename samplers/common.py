"""Helpers shared by the samplers: option checks, per-sample noise, Tweedie denoising and thresholding."""

from __future__ import annotations

import math
from typing import Callable

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


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array,
                    threshold: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
  """E[x(0) | x(t)] = (x + s^2 score) / a (Tweedie's formula; Efron 2011, seed 004). One NFE.

  The one denoiser of every sampler: in the scaled variable x_hat = x / a with sigma = s / a it is
  EDM's D(x_hat; sigma) = x_hat + sigma^2 a score(a x_hat, t) (``scaled_denoiser``). ``threshold``: a
  correction of the data prediction x0 -> x0' applied where it is formed (``thresholder``); None: none.
  """
  a, s = sde.marginal_coefs(t)
  x0 = (x + batch_broadcast(jnp.square(s), x) * score_fn(x, t)) / batch_broadcast(a, x)
  return x0 if threshold is None else threshold(x0)


def scaled_denoiser(sde: SDE, score_fn: ScoreFn, batch: int, threshold: Callable | None = None):
  """``D(x_hat [B, ...], sigma scalar) -> [B, ...]``: ``tweedie_denoise`` of x = a x_hat at t(sigma)."""

  def denoise(x_hat, sigma):
    t = full_time(sde.t_from_sigma(sigma), batch)
    return tweedie_denoise(sde, score_fn, batch_broadcast(sde.marginal_coefs(t)[0], x_hat) * x_hat, t, threshold)

  return denoise


# --------------------------------------------------------------------------- thresholding of the data prediction
THRESHOLDINGS = ("none", "static", "dynamic")


def static_threshold(x0: jax.Array, data_min: float, data_max: float) -> jax.Array:
  """clip(x0, data_min, data_max): static thresholding (Saharia et al. 2022, sec. 2.3; Ho et al. 2020's
  clipped x0 prediction)."""
  return jnp.clip(x0, data_min, data_max)


def dynamic_threshold(x0: jax.Array, data_min: float, data_max: float, percentile: float = 0.995) -> jax.Array:
  """Dynamic thresholding (Saharia et al. 2022, sec. 2.3; DPM-Solver++'s ``dynamic_thresholding_fn``, Lu et
  al. 2022b sec. 5) about the range's centre c = (data_min + data_max) / 2 with half-width r:

      z = x0 - c,   s = max(quantile_p(|z| per sample), r),   x0' = c + clip(z, -s, s) / s * r

  The quantile is linear interpolation (``torch.quantile``'s and ``jnp.quantile``'s default). On [-1, 1]
  (c = 0, r = 1) this is the reference's clip(x0, -s, s) / s exactly; a sample whose p-quantile lies inside
  the range is only clipped to it, one beyond it is shrunk towards the centre. x0: [B, ...] -> [B, ...].
  """
  c, r = 0.5 * (data_min + data_max), 0.5 * (data_max - data_min)
  z = x0 - c
  s = jnp.maximum(jnp.quantile(jnp.abs(z.reshape(z.shape[0], -1)), percentile, axis=1), r)   # per sample
  s = batch_broadcast(s, z)
  return c + jnp.clip(z, -s, s) / s * r


def thresholder(options) -> Callable[[jax.Array], jax.Array] | None:
  """The x0 correction of an options object with ``thresholding``, ``data_min``, ``data_max`` and
  ``threshold_percentile`` (EDM Heun, DPM-Solver++, UniPC); None for "none" (today's samplers, bit for bit)."""
  if options.thresholding == "none":
    return None
  if options.thresholding == "static":
    return lambda x0: static_threshold(x0, options.data_min, options.data_max)
  return lambda x0: dynamic_threshold(x0, options.data_min, options.data_max, options.threshold_percentile)


def check_data_range(options) -> None:
  """data_min < data_max (the cross-field check of the thresholding options)."""
  if not options.data_min < options.data_max:
    raise ValueError(f"data_min must be < data_max, got data_min={options.data_min!r}, data_max={options.data_max!r}")


# Field checks of the options every sampler shares (``sde_lib.checks``): the time floor is checked against
# the SDE's T again by the builder (``check_t_min``).
TIME_FLOOR = checks.number(0.0, 1.0, open_lo=True, open_hi=True)
POSITIVE_FLOAT = checks.number(0.0, open_lo=True)
# The thresholding options of the data-prediction samplers (EDM Heun, DPM-Solver++, UniPC): the method, the data
# range (the library's default [-1, 1]; image configs follow data.centered) and dynamic thresholding's quantile.
THRESHOLDING = checks.choice(*THRESHOLDINGS)
DATA_BOUND = checks.number()
PERCENTILE = checks.number(0.0, 1.0, open_lo=True)
