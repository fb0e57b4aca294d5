"""The one set of argument checks of the library (sde_lib, samplers, losses): each raises a one-line
ValueError naming the argument, the value received and what is valid."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

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


# --------------------------------------------------------------------------- typed option fields
# Field checks ``check(value, where) -> value`` used by the options dataclasses of the samplers and by the
# config schema alike, so an option's default and valid values are written once. Each check is labelled
# with what it accepts (``check.kind``, ``check.bounds``), so tests derive invalid values from it.
Check = Callable[[Any, str], Any]


def labelled(check, kind: str, **bounds):
  """Labels a check with what it accepts."""
  check.kind, check.bounds = kind, bounds
  return check


def integer(lo: int | None = None, hi: int | None = None) -> Check:
  def check(v, where):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer)) or (
        isinstance(v, float) and not v.is_integer()):
      raise ValueError(f"{where} must be an integer, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
      bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
      raise ValueError(f"{where} must be an integer {bound}, got {v!r}")
    return v
  return labelled(check, "int", lo=lo, hi=hi)


def number(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False,
           allow_inf: bool = False) -> Check:
  def check(v, where):
    if not _is_number(v) or math.isnan(v) or (math.isinf(v) and not allow_inf):
      raise ValueError(f"{where} must be a finite number, got {v!r}")
    v = float(v)
    bad_lo = lo is not None and (v <= lo if open_lo else v < lo)
    bad_hi = hi is not None and (v >= hi if open_hi else v > hi)
    if bad_lo or bad_hi:
      left = "" if lo is None else f"{'>' if open_lo else '>='} {lo:g}"
      right = "" if hi is None else f"{'<' if open_hi else '<='} {hi:g}"
      raise ValueError(f"{where} must be {' and '.join(p for p in (left, right) if p)}, got {v!r}")
    return v
  return labelled(check, "float", lo=lo, hi=hi, open_lo=open_lo, open_hi=open_hi, allow_inf=allow_inf)


def boolean(v, where):
  if not isinstance(v, (bool, np.bool_)):
    raise ValueError(f"{where} must be True or False, got {v!r}")
  return bool(v)


labelled(boolean, "bool")


def choice(*options, lower: bool = True) -> Check:
  def check(v, where):
    key = v.lower() if lower and isinstance(v, str) else v
    if key not in options:
      raise ValueError(f"{where} must be one of {list(options)}, got {v!r}")
    return key
  return labelled(check, "choice", options=options)


def text(v, where):
  if not isinstance(v, str):
    raise ValueError(f"{where} must be a string, got {v!r}")
  return v


labelled(text, "str")


def optional(check: Check) -> Check:
  """``check``, or None (the builder's own default, e.g. the SDE's N)."""
  def optional_check(v, where):
    return None if v is None else check(v, where)
  return labelled(optional_check, check.kind, **check.bounds, optional=True)


def spec(default, check: Check, aliases: tuple[str, ...] = ()):
  """A typed field: its default, its check and former names it is also read from (config files only)."""
  return dataclasses.field(default=default, metadata={"check": check, "aliases": aliases})


class Options:
  """Base of the frozen options dataclasses: every field is checked (and normalised) on construction,
  so an options object is valid by construction; errors name the field."""

  def __post_init__(self):
    for f in dataclasses.fields(self):
      check = f.metadata.get("check")
      if check is not None:
        object.__setattr__(self, f.name, check(getattr(self, f.name), f.name))

  @classmethod
  def build(cls, options=None, /, **overrides):
    """``options`` (an instance of ``cls`` or None for the defaults) with ``overrides`` applied.

    Raises:
      ValueError: an unknown option (the valid ones are listed) or a bad value (named).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
      raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; valid options: {names}")
    if options is None:
      return cls(**overrides)
    if not isinstance(options, cls):
      raise ValueError(f"options must be a {cls.__name__}, got {type(options).__name__}")
    return dataclasses.replace(options, **overrides) if overrides else options
