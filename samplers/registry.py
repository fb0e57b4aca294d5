"""The sampler registry: one ``Method`` record per sampling method, the only list of them.

A new sampler is one file (its options dataclass, its ``steps.Stepper`` and its builder) plus its import and
one entry in ``METHODS``; the config schema, the base config files and the option vocabulary are derived from
the records.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Callable

from samplers import adaptive, annealed, heun, multistep, ode, pc


@dataclasses.dataclass(frozen=True)
class Method:
  """A sampling method.

  build: ``(sde, shape, options, /, **overrides) -> sample_fn(key, score_fn) -> (x, nfe)``.
  options: its frozen options dataclass (``sde_lib.checks.Options``): every option and its default.
  stepper: ``(sde, shape, options) -> steps.Stepper``, or None for a method that is not a fixed-grid loop
    (the adaptive ODE and SDE); the conditioning algorithms run on steppers.
  aliases: other libraries' names of its options (score_sde's ``eps``, ``n_steps``; EDM's ``S_churn``...).
  """

  build: Callable
  options: type
  stepper: Callable | None = None
  aliases: types.MappingProxyType = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

  def __call__(self, sde, shape, *args, **kwargs):
    return self.build(sde, shape, *args, **kwargs)

  @property
  def option_names(self) -> list[str]:
    return [f.name for f in dataclasses.fields(self.options)]

  @property
  def fast(self) -> bool:
    """Takes ``nfe=``, an exact budget of score evaluations."""
    return "nfe" in self.option_names


def _aliases(**names) -> types.MappingProxyType:
  return types.MappingProxyType(names)


EDM_NAMES = dict(S_churn="s_churn", S_min="s_tmin", S_max="s_tmax", S_noise="s_noise", sigma_min="sigma_floor")

METHODS: types.MappingProxyType = types.MappingProxyType({
    "pc": Method(pc.get_pc_sampler, pc.PCOptions, pc.PCStepper, _aliases(n_steps="corrector_steps", eps="t_min")),
    "ode": Method(ode.get_ode_sampler, ode.ODEOptions, None, _aliases(eps="t_min")),
    "ald": Method(annealed.get_ald_sampler, annealed.ALDOptions, annealed.ALDStepper, _aliases(eps="t_min")),
    "edm_heun": Method(heun.get_edm_heun_sampler, heun.EDMHeunOptions, heun.EDMHeunStepper,
                       _aliases(eps="t_min", **EDM_NAMES)),
    "dpm_solver_pp": Method(multistep.get_dpm_solver_pp_sampler, multistep.DPMSolverPPOptions,
                            multistep.dpm_solver_pp_stepper, _aliases(eps="t_min", sigma_min="sigma_floor")),
    "unipc": Method(multistep.get_unipc_sampler, multistep.UniPCOptions, multistep.unipc_stepper,
                    _aliases(eps="t_min", sigma_min="sigma_floor")),
    # the reference code's names (score_sde_fast_sampling: abstol, reltol, safety, exp)
    "sde_adaptive": Method(adaptive.get_sde_adaptive_sampler, adaptive.SDEAdaptiveOptions, None,
                           _aliases(eps="t_min", abstol="atol", reltol="rtol", safety="theta", exp="r")),
})

# The fast methods: they take ``nfe=``, an exact budget of score evaluations (final denoising included).
FAST_METHODS = tuple(name for name, m in METHODS.items() if m.fast)
# Other libraries' option names, per method.
ALIASES = types.MappingProxyType({name: m.aliases for name, m in METHODS.items()})
STEPPER_METHODS = tuple(name for name, m in METHODS.items() if m.stepper is not None)


def _method(method: str) -> Method:
  if method not in METHODS:
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
  return METHODS[method]


def sampler_option_names(method: str) -> list[str]:
  """The options ``get_sampler`` accepts for ``method`` (its options dataclass's fields)."""
  return _method(method).option_names


def get_options(method: str, options=None, **overrides):
  """The options object of ``method``: ``options`` (its dataclass, or None for the defaults) with
  ``overrides`` (current names or ``ALIASES``) applied.

  Raises:
    ValueError: an unknown method or option (the valid ones are listed), an option given twice, a bad value.
  """
  m = _method(method)
  renamed = {}
  for name, value in overrides.items():
    new = m.aliases.get(name, name)
    if new in renamed:
      raise ValueError(f"option {new!r} given twice for method {method!r} (once as {name!r})")
    renamed[new] = value
  unknown = sorted(set(renamed) - set(m.option_names))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {m.option_names}")
  return m.options.build(options, **renamed)


def get_sampler(sde, shape, method: str = "pc", options=None, **overrides):
  """Builds ``sample_fn(key, score_fn) -> (x [shape], nfe)`` for one of ``METHODS``.

  ``sample_fn`` is pure and traceable: ``jax.jit(lambda key, params: sample_fn(key, partial(score, params)))``.
  ``options`` is the method's options dataclass (``METHODS[method].options``: ``PCOptions``, ``ODEOptions``,
  ``ALDOptions``, ``EDMHeunOptions``, ``DPMSolverPPOptions``, ``UniPCOptions``, ``SDEAdaptiveOptions``) or None;
  keyword overrides name its fields (or their ``ALIASES``). The fast methods (``FAST_METHODS``) take ``nfe=``, an exact
  score-evaluation budget.

  Raises:
    ValueError: an unknown method or option (the valid ones are listed) or a bad option value.
  """
  return _method(method).build(sde, shape, get_options(method, options, **overrides))


def get_stepper(sde, shape, method: str = "pc", options=None, **overrides):
  """The ``steps.Stepper`` of a fixed-grid method (``STEPPER_METHODS``), for conditioning or your own loop.

  Raises:
    ValueError: a method without steps (the adaptive ODE and SDE) or a bad option.
  """
  m = _method(method)
  if m.stepper is None:
    raise ValueError(f"method {method!r} has no fixed-grid steps; use one of {list(STEPPER_METHODS)}")
  return m.stepper(sde, shape, get_options(method, options, **overrides))
