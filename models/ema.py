"""Exponential moving average of parameters (Polyak averaging; score_sde's ``ema_rate``)."""

from __future__ import annotations

import optax


def ema_update(ema_params, params, rate: float):
  """ema <- rate * ema + (1 - rate) * params, leaf by leaf (optax.incremental_update)."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"ema rate must lie in [0, 1], got {rate!r}")
  return optax.incremental_update(params, ema_params, step_size=1.0 - rate)
