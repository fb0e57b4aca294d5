"""Samplers and likelihoods. They see a ``score_fn(x, t)`` and an SDE, never a model.

``get_sampler(sde, shape, method, **options)`` -> ``sample_fn(key, score_fn) -> (x, nfe)``;
``get_likelihood_fn(sde, ...)`` -> ``likelihood_fn(key, score_fn, x) -> (logp, z, nfe)``;
``guided_score_fn(score_fn, log_likelihood_fn, scale)`` -> a conditional ``score_fn`` for any sampler;
``get_inpainter(sde, shape, method, algorithm)`` -> ``inpaint_fn(key, score_fn, known, mask) -> (x, nfe)``;
``get_inverse_solver(sde, shape, observation, algorithm)`` -> ``solve(key, score_fn, y) -> (x, nfe)`` for
y = A x + noise (``make_observation``, ``observation_from_matrix``, ``linear_observation``);
``get_stepper(sde, shape, method)`` -> a ``Stepper`` (init / step / finish) run by ``run(stepper, key, score_fn,
callback=...)``, the one loop of every fixed-grid method and of conditioning.
"""

from __future__ import annotations

from samplers.adaptive import SDEAdaptiveOptions, get_sde_adaptive_sampler
from samplers.annealed import ALDOptions, get_ald_sampler
from samplers.guidance import classifier_free_score_fn, guided_score_fn
from samplers.heun import EDMHeunOptions, get_edm_heun_sampler
from samplers.inpaint import IMAGE_MASKS, INPAINT_ALGORITHMS, INPAINT_METHODS, get_colorizer, get_inpainter
from samplers.inverse import INVERSE_ALGORITHMS, INVERSE_METHODS, INVERSE_OPTIONS, get_inverse_solver, pigdm_score_fn
from samplers.likelihood import DIVERGENCES, bits_per_dim, dequantize, drift_and_divergence, get_likelihood_fn
from samplers.multistep import DPMSolverPPOptions, UniPCOptions, get_dpm_solver_pp_sampler, get_unipc_sampler
from samplers.observation import (OPERATOR_OPTIONS, OPERATOR_PARAMS, OPERATORS, Observation, Spectral, colour_observation,
                                  colorization_basis, linear_observation, make_observation, mask_observation,
                                  observation_from_matrix)
from samplers.ode import ADJOINTS, SOLVERS, ODEOptions, get_ode_sampler, solve
from samplers.pc import (CORRECTORS, LANGEVIN_STEP_RULES, PREDICTORS, Corrector, FunctionCorrector, FunctionPredictor,
                         PCOptions, Predictor, get_pc_sampler)
from samplers.registry import (ALIASES, FAST_METHODS, METHODS, STEPPER_METHODS, Method, get_options, get_sampler,
                               get_stepper, sampler_option_names)
from samplers.schedules import GRIDS, sigma_grid
from samplers.steps import Stepper, run

__all__ = ["guided_score_fn", "classifier_free_score_fn", "get_inpainter", "get_colorizer", "colorization_basis",
           "get_inverse_solver", "INVERSE_ALGORITHMS", "INVERSE_METHODS", "INVERSE_OPTIONS", "pigdm_score_fn",
           "OPERATORS", "OPERATOR_PARAMS", "OPERATOR_OPTIONS", "Spectral", "linear_observation", "make_observation",
           "Observation", "mask_observation", "colour_observation", "observation_from_matrix", "Method", "get_options",
           "get_stepper", "STEPPER_METHODS", "Stepper", "run", "PCOptions", "ODEOptions", "ALDOptions",
           "EDMHeunOptions", "DPMSolverPPOptions", "UniPCOptions",
           "INPAINT_ALGORITHMS", "INPAINT_METHODS", "IMAGE_MASKS", "get_sampler", "METHODS", "ALIASES", "sampler_option_names", "PREDICTORS", "CORRECTORS", "Predictor",
           "Corrector", "FunctionPredictor", "FunctionCorrector", "LANGEVIN_STEP_RULES",
           "get_likelihood_fn", "DIVERGENCES", "bits_per_dim", "dequantize", "drift_and_divergence", "SOLVERS", "ADJOINTS", "solve",
           "get_pc_sampler", "get_ode_sampler", "get_ald_sampler", "get_edm_heun_sampler",
           "get_dpm_solver_pp_sampler", "get_unipc_sampler", "SDEAdaptiveOptions", "get_sde_adaptive_sampler",
           "FAST_METHODS", "GRIDS", "sigma_grid"]
