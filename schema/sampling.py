"""The ``sampling`` section: the method, the options shared by every method, one sub-section per method
(the method's own options dataclass, ``samplers.METHODS[name].options``), conditioning.

Each method's sub-section is that method's options dataclass itself, so its options and defaults are
written once, in the sampler's module; a new sampler in ``samplers.METHODS`` gets its section here without an
edit. ``t_min``, ``denoise`` and ``nfe`` are set once for every method (``SHARED``; None: the method's own
default), and PC's ``ladder`` follows ``training.continuous`` (``DERIVED``).
"""

from __future__ import annotations

import dataclasses
import typing

import samplers
import samplers.inpaint
from schema.fields import (Section, boolean, build_section, choice, integer, labelled, number, optional, record_read,
                           spec, text)

SHARED = ("t_min", "denoise", "nfe")
DERIVED = ("ladder",)
CONDITIONS = ("none", "inpaint", "colorize", "class", "inverse")
TIME_FLOOR = samplers.common.TIME_FLOOR
# score_sde's flat sampling fields -> (method section, field).
SCORE_SDE_FLAT = {"predictor": ("pc", "predictor"), "corrector": ("pc", "corrector"), "snr": ("pc", "snr"),
                  "n_steps_each": ("pc", "corrector_steps"), "probability_flow": ("pc", "probability_flow")}


def config_fields(method: str) -> list[dataclasses.Field]:
  """The fields of ``sampling.<method>`` a config sets (the options dataclass's, minus SHARED and DERIVED)."""
  return [f for f in dataclasses.fields(samplers.METHODS[method].options) if f.name not in SHARED + DERIVED]


def _inpaint_fields() -> list:
  """sampling.inpaint: the algorithm, the mask and every algorithm's own options (their dataclasses')."""
  out = [("algorithm", str, spec("smc", choice(*samplers.INPAINT_ALGORITHMS))),
         ("mask", str, spec("bottom_half", choice(*samplers.IMAGE_MASKS)))]
  for cls in samplers.inpaint.ALGORITHM_OPTIONS.values():
    out += [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)) for f in dataclasses.fields(cls)]
  return out


# sampling.condition = "inpaint" / "colorize": samplers.get_inpainter's algorithm and its options.
Inpaint = dataclasses.make_dataclass("Inpaint", _inpaint_fields(), bases=(Section,), frozen=True)


def _union(fields: list) -> list:
  """One config field per name. A name whose defaults differ between operators or algorithms (e.g. blur
  kernel sizes) defaults to None there: each operator's or algorithm's own default."""
  out = {}
  for name, kind, f in fields:
    if name not in out:
      out[name] = (name, kind, f)
    elif out[name][2].default is not None and out[name][2].default != f.default:
      check = f.metadata["check"]
      out[name] = (name, typing.Optional[kind], spec(None, optional(check)))
  return list(out.values())


def _inverse_fields() -> list:
  """sampling.inverse: the operator, its noise, the algorithm, every operator's parameters and every
  algorithm's own options (their dataclasses': ``samplers.OPERATOR_OPTIONS``, ``samplers.INVERSE_OPTIONS``),
  minus SHARED (DDRM's t_min is sampling.t_min)."""
  out = [("operator", str, spec("superres", choice(*samplers.OPERATORS))),
         ("noise_std", float, spec(0.0, number(0.0))),
         ("algorithm", str, spec("smc", choice(*samplers.INVERSE_ALGORITHMS)))]
  for cls in list(samplers.OPERATOR_OPTIONS.values()) + list(samplers.INVERSE_OPTIONS.values()):
    out += [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata))
            for f in dataclasses.fields(cls) if f.name not in SHARED]
  return _union(out)


# sampling.condition = "inverse": samplers.make_observation's operator, noise and parameters, and
# samplers.get_inverse_solver's algorithm and its options.
Inverse = dataclasses.make_dataclass("Inverse", _inverse_fields(), bases=(Section,), frozen=True)


def _guidance_interval(v, where):
  """sampling.guidance_interval: () / None (guidance everywhere) or (sigma_lo, sigma_hi) with 0 <= sigma_lo <
  sigma_hi <= inf (``samplers.guidance.check_interval``)."""
  if v is None or (isinstance(v, (tuple, list)) and len(v) == 0):
    return None
  return samplers.guidance.check_interval(v, where)


labelled(_guidance_interval, "interval")


def _sampling_post_init(self):
  if self.guidance_interval == ():
    object.__setattr__(self, "guidance_interval", None)        # the dataclass default: guidance everywhere
  if self.nfe and self.method not in samplers.FAST_METHODS:
    raise ValueError(f"sampling.nfe ({self.nfe}) is a budget for {list(samplers.FAST_METHODS)} only; "
                     f"sampling.method={self.method!r} counts sampling.{self.method}.num_steps (set sampling.nfe=0)")


def _options(self):
  """The configured method's section."""
  return getattr(self, self.method)


_SAMPLING_FIELDS = [
    ("method", str, spec("pc", choice(*sorted(samplers.METHODS)))),
    # Shared by every method; None: each method's own default.
    ("t_min", float, spec(None, optional(TIME_FLOOR))),
    ("denoise", bool, spec(None, optional(boolean), aliases=("noise_removal",))),
    # The exact number of score evaluations (final denoising included) of a fast method (samplers.FAST_METHODS),
    # which picks its own steps and orders; None: the method's num_steps.
    ("nfe", int, spec(None, optional(integer(1)))),
    # --mode sample: "inpaint" / "colorize" complete test images with sampling.inpaint; "inverse" solves
    # y = A x + noise for test images with sampling.inverse; "class" samples given classes (classifier-free
    # or classifier guidance).
    ("condition", str, spec("none", choice(*CONDITIONS))),
    # condition = "class": the class of every sample (-1: sample i gets class i mod the number of classes), the
    # guidance scale (1 the conditional score, 0 the unconditional one, > 1 sharper towards the class), and for an
    # unconditional network a noise-conditional classifier (its config file and its run's workdir).
    ("class_label", int, spec(-1, integer(-1))),
    ("guidance_scale", float, spec(1.0, number(0.0))),
    # The noise levels (sigma_lo, sigma_hi] of sigma(t) = s(t)/a(t) where guidance_scale applies (Kynkaanniemi et
    # al. 2024 eq. 2); outside it the conditional score alone (scale 1). () or None: every noise level. On the
    # command line: --config.sampling.guidance_interval=0.3,5.0 (or "(0.3, 5.0)").
    ("guidance_interval", tuple, spec((), _guidance_interval)),
    ("classifier_config", str, spec("", text)),
    ("classifier_workdir", str, spec("", text)),
] + [(name, m.options, dataclasses.field(default_factory=m.options)) for name, m in samplers.METHODS.items()] + [
    ("inpaint", Inpaint, dataclasses.field(default_factory=Inpaint)),
    ("inverse", Inverse, dataclasses.field(default_factory=Inverse))]

Sampling = dataclasses.make_dataclass(
    "Sampling", _SAMPLING_FIELDS, bases=(Section,), frozen=True,
    namespace={"__post_init__": _sampling_post_init, "options": property(_options),
               "__doc__": "The sampling section (see the module docstring)."})


def parse_sampling(values) -> Sampling:
  values = dict(values)
  sections = {name: dict(values.pop(name, None) or {}) for name in samplers.METHODS}
  for flat, (section, field) in SCORE_SDE_FLAT.items():
    if flat in values:
      if field in sections[section]:
        raise ValueError(f"sampling.{section}.{field} is given twice (also as score_sde's sampling.{flat})")
      sections[section][field] = values.pop(flat)
  prepared = {}
  for name, m in samplers.METHODS.items():
    where = f"sampling.{name}"
    for field in SHARED + DERIVED:
      if field in sections[name]:
        why = f"set sampling.{field} for every method" if field in SHARED else "it follows training.continuous"
        raise ValueError(f"{where}.{field} is not a config field ({why})")
    prepared[name] = build_section(m.options, sections[name], where, exclude=SHARED + DERIVED)
  prepared["inpaint"] = build_section(Inpaint, values.pop("inpaint", None) or {}, "sampling.inpaint")
  prepared["inverse"] = build_section(Inverse, values.pop("inverse", None) or {}, "sampling.inverse")
  return build_section(Sampling, values, "sampling", **prepared)


def sampler_options(config):
  """(method, options object) for ``samplers.get_sampler``: the method's section with the shared fields and
  the derived ones applied.

  A discrete-ladder model (``training.continuous=False``) is sampled by PC on its own ladder, as score_sde
  does (``ladder=True``, num_steps = the SDE's N).
  """
  s = config.sampling
  section = s.options
  for f in config_fields(s.method):
    record_read(f"sampling.{s.method}", f.name)
  names = set(samplers.sampler_option_names(s.method))
  shared = {k: getattr(s, k) for k in SHARED if k in names and getattr(s, k) is not None}
  if s.method == "pc":
    shared["ladder"] = not config.training.continuous
    if shared["ladder"]:
      shared["num_steps"] = None                       # the ladder's N
  return s.method, dataclasses.replace(section, **shared)


def _continuous_for_smc(algorithm: str, method: str, options, s):
  """SMC's PC options: no corrector (the particles move by the predictor alone) and the continuous grid (its
  transition density is the continuous-time one; sampling.pc.num_steps steps). The other algorithms keep a
  discrete-ladder model's ladder (``samplers.inpaint.ladder_marginal``)."""
  if algorithm != "smc" or method != "pc":
    return options
  options = dataclasses.replace(options, corrector="none")
  if options.ladder:
    options = dataclasses.replace(options, ladder=False, num_steps=s.pc.num_steps)
  return options


def inpainter_arguments(config) -> tuple[str, str, dict]:
  """(method, algorithm, options) of ``samplers.get_inpainter`` from config.sampling: the method's options
  object (shared fields applied) and the algorithm's own fields of sampling.inpaint.

  Raises:
    ValueError: a method the inpainter does not run on, or a budget (the message names the field).
  """
  s = config.sampling
  if s.method not in samplers.inpaint.INPAINT_METHODS:
    raise ValueError(f"sampling.method must be one of {list(samplers.inpaint.INPAINT_METHODS)} with "
                     f"sampling.condition={s.condition!r}, got {s.method!r}")
  method, options = sampler_options(config)
  algorithm = s.inpaint.algorithm
  options = _continuous_for_smc(algorithm, method, options, s)
  own = {f.name: getattr(s.inpaint, f.name) for f in dataclasses.fields(samplers.inpaint.ALGORITHM_OPTIONS[algorithm])}
  return method, algorithm, dict(options=options, **own)


def observation_arguments(config) -> tuple[str, float, dict]:
  """(operator, noise_std, parameters) of ``samplers.make_observation`` from config.sampling.inverse: the
  configured operator's own parameters (``samplers.OPERATOR_PARAMS[operator]``; None: the operator's default)."""
  s = config.sampling.inverse
  params = {name: getattr(s, name) for name in samplers.OPERATOR_PARAMS[s.operator]}
  return s.operator, s.noise_std, {k: v for k, v in params.items() if v is not None}


def inverse_arguments(config) -> tuple[str | None, str, dict]:
  """(method, algorithm, options) of ``samplers.get_inverse_solver`` from config.sampling: the method's
  options object (shared fields applied) and the algorithm's own fields of sampling.inverse. DDRM takes its
  own steps: method None, its options and sampling.t_min when set.

  Raises:
    ValueError: a method the algorithm does not run on (the message names the fields).
  """
  s = config.sampling
  algorithm = s.inverse.algorithm
  fields = dataclasses.fields(samplers.INVERSE_OPTIONS[algorithm])
  own = {f.name: getattr(s.inverse, f.name) for f in fields if f.name not in SHARED}
  own.update({f.name: getattr(s, f.name) for f in fields if f.name in SHARED})
  own = {k: v for k, v in own.items() if v is not None}                # None: the algorithm's own default
  methods = samplers.INVERSE_METHODS[algorithm]
  if algorithm == "ddrm":
    return None, algorithm, own
  if s.method not in methods:
    raise ValueError(f"sampling.method must be one of {list(methods)} with sampling.inverse.algorithm="
                     f"{algorithm!r}, got {s.method!r}")
  method, options = sampler_options(config)
  return method, algorithm, dict(options=_continuous_for_smc(algorithm, method, options, s), **own)
