"""ConfigDict sections generated from the typed defaults, for the base config files: the sampling section
(every method's options, from the samplers' options dataclasses) is written nowhere else.

A field whose default is None becomes an ml_collections placeholder of its type, so it can still be set from
the command line (``--config.sampling.pc.num_steps=100``).
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from schema.sampling import Inpaint, Inverse, Sampling, config_fields

_PLACEHOLDER_TYPES = (bool, int, float, str)


def _value(field: dataclasses.Field, owner):
  default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
  if default is not None:
    return default
  hints = typing.get_type_hints(owner)
  kinds = [t for t in typing.get_args(hints[field.name]) if t in _PLACEHOLDER_TYPES]
  kind = hints[field.name] if hints[field.name] in _PLACEHOLDER_TYPES else (kinds[0] if kinds else None)
  if kind is None:
    raise TypeError(f"{owner.__name__}.{field.name}: a None default needs a bool/int/float/str type")
  return config_dict.placeholder(kind)


def _section(fields, owner) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({f.name: _value(f, owner) for f in fields})


def sampling_config() -> ml_collections.ConfigDict:
  """The base config's ``sampling`` section: every field of ``schema.Sampling`` at its default, one
  sub-section per method (``schema.config_fields``), ``inpaint`` and ``inverse``."""
  import samplers

  methods = set(samplers.METHODS)
  plain = [f for f in dataclasses.fields(Sampling) if f.name not in methods | {"inpaint", "inverse"}]
  out = _section(plain, Sampling)
  for name, m in samplers.METHODS.items():
    out[name] = _section(config_fields(name), m.options)
  out.inpaint = _section(dataclasses.fields(Inpaint), Inpaint)
  out.inverse = _section(dataclasses.fields(Inverse), Inverse)
  return out


def training_defaults(training: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``training`` with every ``schema.Training`` field it does not set added at its typed default (remat,
  compute_dtype, backward, ...), so the command line can override them (``--config.training.remat=full``)."""
  from schema.sections import Training

  for field in dataclasses.fields(Training):
    if field.name not in training:
      training[field.name] = _value(field, Training)
  return training


__all__ = ["sampling_config", "training_defaults"]
