"""The machinery of the typed config: sections, read tracking, and building a section from a plain dict.

The field checks themselves (``integer``, ``number``, ``choice``, ...) live in ``sde_lib.checks``, shared
with the samplers' options dataclasses, so an option's default and valid values are written once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Mapping

from sde_lib.checks import (Check, boolean, choice, integer, labelled, number, optional,  # noqa: F401 (re-exported)
                            spec, text)

_READ_LOGS: list[set] = []       # active ``track_reads`` sets
# Options whose "default" config files wrote as 0 before None placeholders existed: 0 reads as None there.
ZERO_MEANS_DEFAULT = ("num_steps", "nfe", "langevin_step_size")


class Section:
  """Attribute access plus ``get(name, default)`` (the read-only part of ConfigDict's interface).

  Under ``track_reads()`` every field read is recorded as "section.field" (tests check that every
  field a config file sets is read by the run it configures).
  """

  def __getattribute__(self, name):
    if _READ_LOGS and not name.startswith("_"):
      where = object.__getattribute__(self, "__dict__").get("_where")
      if where is not None and name in object.__getattribute__(self, "__dataclass_fields__"):
        record_read(where, name)
    return object.__getattribute__(self, name)

  def get(self, name: str, default=None):
    return getattr(self, name, default)


def record_read(where: str, name: str) -> None:
  """Records that field ``where.name`` was read (for sections that are not ``Section``s: sampler options)."""
  for log in _READ_LOGS:
    log.add(f"{where}.{name}" if where else name)


@contextlib.contextmanager
def track_reads():
  """``with track_reads() as reads:`` collects the "section.field" paths of every config field read."""
  log: set = set()
  _READ_LOGS.append(log)
  try:
    yield log
  finally:
    _READ_LOGS.remove(log)


def where_of(section) -> str:
  """The config path of a section built by ``build_section``."""
  return object.__getattribute__(section, "__dict__").get("_where", "")


def build_section(cls, values: Mapping, where: str, *, exclude: tuple[str, ...] = (), **prepared):
  """``cls`` (a frozen dataclass with ``spec`` fields) from a plain dict: aliases resolved, unknown fields
  rejected, every value checked and named ``where.field``. ``exclude``: fields a config may not set here
  (the schema sets them elsewhere); ``prepared``: fields already built (sub-sections)."""
  values = dict(values)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
  for f in fields.values():
    for alias in f.metadata.get("aliases", ()):
      if alias in values:
        if f.name in values:
          raise ValueError(f"{where}.{f.name} is given twice (also as its former name {where}.{alias})")
        values[f.name] = values.pop(alias)
  unknown = sorted(set(values) - set(fields) - set(prepared))
  if unknown:
    valid = sorted(n for n in fields if n not in ("network", "ignored"))
    raise ValueError(f"{where}.{unknown[0]} is not a config field (valid fields of {where}: {valid})")
  out = dict(prepared)
  for name, f in fields.items():
    if name in prepared or "check" not in f.metadata:
      continue
    check = f.metadata["check"]
    if name not in values:
      continue                                    # the dataclass's default
    value = values[name]
    if name in ZERO_MEANS_DEFAULT and check.bounds.get("optional") and not isinstance(value, bool) and value == 0:
      value = None
    out[name] = check(value, f"{where}.{name}")
  section = cls(**out)
  object.__setattr__(section, "_where", where)
  return section
