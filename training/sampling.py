"""The configured sampler: ``training.config.sampler_options`` handed to ``samplers.get_sampler``."""

from __future__ import annotations

import samplers
from training.config import as_config, sampler_options


def get_sampler_from_config(config, sde, shape):
  """``sample_fn(key, score_fn) -> (x [shape], nfe)`` of config.sampling (see ``sampler_options``)."""
  method, options = sampler_options(as_config(config))
  return samplers.get_sampler(sde, shape, method, **options)
