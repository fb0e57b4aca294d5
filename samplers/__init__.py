"""Samplers and likelihoods. They see a ``score_fn(x, t)`` and an SDE, never a model.

``get_sampler(sde, shape, method, **options)`` -> ``sample_fn(key, score_fn) -> (x, nfe)``;
``get_likelihood_fn(sde, ...)`` -> ``likelihood_fn(key, score_fn, x) -> (logp, z, nfe)``.
"""

from __future__ import annotations

import inspect

from samplers.annealed import get_ald_sampler
from samplers.fast import get_dpm_solver_pp_sampler, get_edm_heun_sampler
from samplers.likelihood import DIVERGENCES, bits_per_dim, dequantize, drift_and_divergence, get_likelihood_fn
from samplers.ode import SOLVERS, get_ode_sampler, solve
from samplers.pc import CORRECTORS, PREDICTORS, get_pc_sampler, register_corrector, register_predictor

METHODS = {
    "pc": get_pc_sampler,
    "ode": get_ode_sampler,
    "ald": get_ald_sampler,
    "edm_heun": get_edm_heun_sampler,
    "dpm_solver_pp": get_dpm_solver_pp_sampler,
}


def get_sampler(sde, shape, method: str = "pc", **options):
  """Builds ``sample_fn(key, score_fn) -> (x [shape], nfe)`` for one of ``METHODS``.

  ``sample_fn`` is pure and traceable: ``jax.jit(lambda key, params: sample_fn(key, partial(score, params)))``.
  The options are those of the method's builder (``get_pc_sampler``, ``get_ode_sampler``,
  ``get_ald_sampler``, ``get_edm_heun_sampler``, ``get_dpm_solver_pp_sampler``).

  Raises:
    ValueError: an unknown method or option (the valid ones are listed) or a bad option value.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
  builder = METHODS[method]
  valid = [p for p in inspect.signature(builder).parameters if p not in ("sde", "shape")]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {valid}")
  return builder(sde, shape, **options)


__all__ = ["get_sampler", "METHODS", "PREDICTORS", "CORRECTORS", "register_predictor", "register_corrector",
           "get_likelihood_fn", "DIVERGENCES", "bits_per_dim", "dequantize", "drift_and_divergence", "SOLVERS", "solve",
           "get_pc_sampler", "get_ode_sampler", "get_ald_sampler", "get_edm_heun_sampler",
           "get_dpm_solver_pp_sampler"]
