"""Samplers and likelihoods. They see a ``score_fn(x, t)`` and an SDE, never a model.

``get_sampler(sde, shape, method, **options)`` -> ``sample_fn(key, score_fn) -> (x, nfe)``;
``get_likelihood_fn(sde, ...)`` -> ``likelihood_fn(key, score_fn, x) -> (logp, z, nfe)``;
``guided_score_fn(score_fn, log_likelihood_fn, scale)`` -> a conditional ``score_fn`` for any sampler;
``get_inpainter(sde, shape, method, algorithm)`` -> ``inpaint_fn(key, score_fn, known, mask) -> (x, nfe)``.
"""

from __future__ import annotations

import inspect

from samplers.annealed import get_ald_sampler
from samplers.fast import get_edm_heun_sampler
from samplers.guidance import classifier_free_score_fn, guided_score_fn
from samplers.inpaint import IMAGE_MASKS, INPAINT_ALGORITHMS, INPAINT_METHODS, colorization_basis, get_colorizer, get_inpainter
from samplers.multistep import get_dpm_solver_pp_sampler, get_unipc_sampler
from samplers.schedules import GRIDS, sigma_grid
from samplers.likelihood import DIVERGENCES, bits_per_dim, dequantize, drift_and_divergence, get_likelihood_fn
from samplers.ode import ADJOINTS, SOLVERS, get_ode_sampler, solve
from samplers.pc import (CORRECTORS, LANGEVIN_STEP_RULES, PREDICTORS, Corrector, FunctionCorrector, FunctionPredictor,
                         Predictor, get_pc_sampler)

METHODS = {
    "pc": get_pc_sampler,
    "ode": get_ode_sampler,
    "ald": get_ald_sampler,
    "edm_heun": get_edm_heun_sampler,
    "dpm_solver_pp": get_dpm_solver_pp_sampler,
    "unipc": get_unipc_sampler,
}

# The fast methods: they take ``nfe=``, an exact budget of score evaluations (final denoising included).
FAST_METHODS = ("edm_heun", "dpm_solver_pp", "unipc")


# Former option names, still accepted (one vocabulary now: num_steps = grid steps or levels, t_min = the
# time floor, corrector_steps = corrector/Langevin steps per level, sigma_floor = the lowest noise level
# of the sigma-grid samplers, langevin_step_size = ALD's epsilon, denoise = the final Tweedie step).
ALIASES = {
    "pc": {"N": "num_steps", "n_steps": "corrector_steps", "eps": "t_min", "langevin_step": "langevin_step_rule"},
    "ode": {"n_steps": "num_steps", "eps": "t_min"},
    "ald": {"n_levels": "num_steps", "n_steps": "corrector_steps", "step_size": "langevin_step_size", "eps": "t_min",
            "sigma_min": "sigma_floor"},
    "edm_heun": {"N": "num_steps", "eps": "t_min", "sigma_min": "sigma_floor", "S_churn": "s_churn",
                 "S_min": "s_tmin", "S_max": "s_tmax", "S_noise": "s_noise"},
    "dpm_solver_pp": {"N": "num_steps", "eps": "t_min", "sigma_min": "sigma_floor"},
    "unipc": {"N": "num_steps", "eps": "t_min", "sigma_min": "sigma_floor"},
}


def sampler_option_names(method: str) -> list[str]:
  """The options ``get_sampler`` accepts for ``method`` (its builder's keyword arguments)."""
  return [p for p in inspect.signature(METHODS[method]).parameters if p not in ("sde", "shape")]


def get_sampler(sde, shape, method: str = "pc", **options):
  """Builds ``sample_fn(key, score_fn) -> (x [shape], nfe)`` for one of ``METHODS``.

  ``sample_fn`` is pure and traceable: ``jax.jit(lambda key, params: sample_fn(key, partial(score, params)))``.
  The options are those of the method's builder (``get_pc_sampler``, ``get_ode_sampler``,
  ``get_ald_sampler``, ``get_edm_heun_sampler``, ``get_dpm_solver_pp_sampler``, ``get_unipc_sampler``); the
  fast methods (``FAST_METHODS``) take ``nfe=``, an exact score-evaluation budget; the former names in
  ``ALIASES`` are accepted too.

  Raises:
    ValueError: an unknown method or option (the valid ones are listed) or a bad option value.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
  valid = sampler_option_names(method)
  renamed = {}
  for name, value in options.items():
    new = ALIASES[method].get(name, name)
    if new in renamed:
      raise ValueError(f"option {new!r} given twice for method {method!r} (once as {name!r})")
    renamed[new] = value
  unknown = sorted(set(renamed) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {valid}")
  return METHODS[method](sde, shape, **renamed)


__all__ = ["guided_score_fn", "classifier_free_score_fn", "get_inpainter", "get_colorizer", "colorization_basis",
           "INPAINT_ALGORITHMS", "INPAINT_METHODS", "IMAGE_MASKS", "get_sampler", "METHODS", "ALIASES", "sampler_option_names", "PREDICTORS", "CORRECTORS", "Predictor",
           "Corrector", "FunctionPredictor", "FunctionCorrector", "LANGEVIN_STEP_RULES",
           "get_likelihood_fn", "DIVERGENCES", "bits_per_dim", "dequantize", "drift_and_divergence", "SOLVERS", "ADJOINTS", "solve",
           "get_pc_sampler", "get_ode_sampler", "get_ald_sampler", "get_edm_heun_sampler",
           "get_dpm_solver_pp_sampler", "get_unipc_sampler", "FAST_METHODS", "GRIDS", "sigma_grid"]
