"""The one set of argument checks of the library (sde_lib, samplers, losses): each raises a one-line
ValueError naming the argument, the value received and what is valid."""

from __future__ import annotations

import math

import numpy as np


def _is_number(value) -> bool:
  return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_positive_int(name: str, value) -> int:
  """An integer >= 1 (bools and floats refused)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return int(value)


def check_positive(name: str, value) -> float:
  """A finite number > 0."""
  if not _is_number(value) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
  return float(value)


def check_finite_nonnegative(name: str, value) -> float:
  """A finite number >= 0."""
  if not _is_number(value) or not math.isfinite(value) or value < 0:
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
  return float(value)


def check_time(name: str, value, T: float) -> float:
  """A time strictly inside (0, T)."""
  if not _is_number(value) or not 0.0 < value < T:
    raise ValueError(f"{name} must lie in (0, T={T}), got {value!r}")
  return float(value)


def check_choice(name: str, value, choices):
  """One of ``choices``."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
  return value
