"""Exponential moving average of parameters (Polyak averaging; score_sde's ``ema_rate``) with warm-up."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def ema_warmup_rate(rate: float, num_updates):
  """min(rate, (1 + n) / (10 + n)) after n updates (n counts the current one; score_sde_pytorch's
  ``models/ema.py`` with ``use_num_updates``).

  Without it the EMA keeps rate^n of its initial value: 0.999^2000 = e^-2 = 13.5% of an untrained,
  near-zero-output network after 2,000 steps, which shrinks the EMA score and sends every
  deterministic sampler astray. With it the weight of the initial value is prod_k (1 + k)/(10 + k),
  below 1e-4 after 40 updates.
  """
  n = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(rate, (1.0 + n) / (10.0 + n))


def ema_update(ema_params, params, rate: float, num_updates=None):
  """ema <- r * ema + (1 - r) * params leaf by leaf (optax.incremental_update), where r = ``rate``,
  or ``ema_warmup_rate(rate, num_updates)`` when ``num_updates`` (an int or int array, this update
  included) is given."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"ema rate must lie in [0, 1], got {rate!r}")
  r = rate if num_updates is None else ema_warmup_rate(rate, num_updates)
  return optax.incremental_update(params, ema_params, step_size=1.0 - r)
