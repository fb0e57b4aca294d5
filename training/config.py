"""The one typed configuration boundary: a ConfigDict becomes a validated, frozen ``Config`` once.

``parse_config(config_dict)`` checks the type and range of every field, maps score_sde's field names
(and this project's former ones) to the current ones, rejects unknown fields, and returns frozen
dataclasses; nothing downstream reads a ConfigDict. Every error is one ValueError naming the field,
the value received and what is valid.

Sampler options live in one section per method (``sampling.pc``, ``sampling.ode``, ``sampling.ald``,
``sampling.edm_heun``, ``sampling.dpm_solver_pp``, ``sampling.unipc``) in the samplers' vocabulary
(``num_steps``, ``corrector_steps``, ``t_min``, ...), so switching ``sampling.method`` never inherits
another method's step count; ``sampling.t_min``, ``sampling.denoise`` and ``sampling.nfe`` (the exact
budget of the fast methods) are shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Mapping

import models
import samplers
import samplers.inpaint
import sde_lib
from datasets.images import DATASETS

# ------------------------------------------------------------------------------ value checks
Check = Callable[[Any, str], Any]


def _kind(check, kind: str, **bounds):
  """Labels a check with what it accepts, so tests can derive invalid values from the schema."""
  check.kind, check.bounds = kind, bounds
  return check


def integer(lo: int | None = None, hi: int | None = None) -> Check:
  def check(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
      raise ValueError(f"{where} must be an integer, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
      bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
      raise ValueError(f"{where} must be an integer {bound}, got {v!r}")
    return v
  return _kind(check, "int", lo=lo, hi=hi)


def number(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False,
           allow_inf: bool = False) -> Check:
  def check(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or (math.isinf(v) and not allow_inf):
      raise ValueError(f"{where} must be a finite number, got {v!r}")
    v = float(v)
    bad_lo = lo is not None and (v <= lo if open_lo else v < lo)
    bad_hi = hi is not None and (v >= hi if open_hi else v > hi)
    if bad_lo or bad_hi:
      left = "" if lo is None else f"{'>' if open_lo else '>='} {lo:g}"
      right = "" if hi is None else f"{'<' if open_hi else '<='} {hi:g}"
      raise ValueError(f"{where} must be {' and '.join(p for p in (left, right) if p)}, got {v!r}")
    return v
  return _kind(check, "float", lo=lo, hi=hi, open_lo=open_lo, open_hi=open_hi, allow_inf=allow_inf)


def boolean(v, where):
  if not isinstance(v, bool):
    raise ValueError(f"{where} must be True or False, got {v!r}")
  return v


_kind(boolean, "bool")


def choice(*options: str, lower: bool = True) -> Check:
  def check(v, where):
    key = v.lower() if lower and isinstance(v, str) else v
    if key not in options:
      raise ValueError(f"{where} must be one of {list(options)}, got {v!r}")
    return key
  return _kind(check, "choice", options=options)


def text(v, where):
  if not isinstance(v, str):
    raise ValueError(f"{where} must be a string, got {v!r}")
  return v


_kind(text, "str")


_READ_LOGS: list[set] = []       # active ``track_reads`` sets


class _Section:
  """Attribute access plus ``get(name, default)`` (the read-only part of ConfigDict's interface).

  Under ``track_reads()`` every field read is recorded as "section.field" (tests check that every
  field a config file sets is read by the run it configures).
  """

  def __getattribute__(self, name):
    if _READ_LOGS and not name.startswith("_"):
      where = object.__getattribute__(self, "__dict__").get("_where")
      if where is not None and name in object.__getattribute__(self, "__dataclass_fields__"):
        for log in _READ_LOGS:
          log.add(f"{where}.{name}" if where else name)
    return object.__getattribute__(self, name)

  def get(self, name: str, default=None):
    return getattr(self, name, default)


@contextlib.contextmanager
def track_reads():
  """``with track_reads() as reads:`` collects the "section.field" paths of every config field read."""
  log: set = set()
  _READ_LOGS.append(log)
  try:
    yield log
  finally:
    _READ_LOGS.remove(log)


def spec(default, check: Check, aliases: tuple[str, ...] = ()):
  """A config field: default, check, and former names it is also read from."""
  return dataclasses.field(default=default, metadata={"check": check, "aliases": aliases})


POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
TOLERANCE = number(0.0, open_lo=True)
TIME_FLOOR = number(0.0, 1.0, open_lo=True, open_hi=True)
GRID = _kind(lambda v, where: samplers.schedules.check_grid(v, where), "choice", options=samplers.GRIDS)


# --------------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class Training(_Section):
  sde: str = spec("vesde", choice(*sorted(sde_lib.SDES)))
  batch_size: int = spec(128, POSITIVE)                        # global batch, split over all devices
  n_iters: int = spec(1300001, POSITIVE)
  snapshot_freq: int = spec(50000, POSITIVE)
  snapshot_freq_for_preemption: int = spec(10000, NON_NEGATIVE)   # 0: no preemption checkpoint
  log_freq: int = spec(50, NON_NEGATIVE)
  eval_freq: int = spec(100, NON_NEGATIVE)                      # 0: no evaluation loss during training
  snapshot_sampling: bool = spec(True, boolean)
  snapshot_samples: int = spec(64, POSITIVE)
  continuous: bool = spec(True, boolean)
  reduce_mean: bool = spec(False, boolean)
  likelihood_weighting: bool = spec(False, boolean)
  steps_per_call: int = spec(1, POSITIVE, ("n_jitted_steps",))
  t_min: float = spec(1e-5, TIME_FLOOR, ("eps",))             # the loss's smallest time
  # A class-conditional network (model.num_classes > 0): the share of labels replaced by the null label,
  # which trains the unconditional score of classifier-free guidance alongside (Ho & Salimans 2022).
  label_dropout: float = spec(0.1, number(0.0, 1.0))
  # "score": a score network; "classifier": a noise-conditional classifier (model.name = "classifier") for
  # classifier guidance (sampling.classifier_config / classifier_workdir of the score model's run).
  task: str = spec("score", choice("score", "classifier"))
  # Per residual / attention block jax.checkpoint policy (models.layers.REMAT_POLICIES): "full" keeps
  # only block inputs, "dots" also conv/matmul outputs; the backward pass recomputes the rest.
  remat: str = spec("none", choice(*models.layers.REMAT_POLICIES))
  # Mixed precision of the trained network: parameters, Adam and EMA stay float32; layers compute in this.
  compute_dtype: str = spec("float32", choice(*models.layers.COMPUTE_DTYPES))


@dataclasses.dataclass(frozen=True)
class PC(_Section):
  predictor: str = spec("reverse_diffusion", choice(*sorted(samplers.PREDICTORS)))
  corrector: str = spec("langevin", choice(*sorted(samplers.CORRECTORS)))
  snr: float = spec(0.16, number(0.0, open_lo=True))
  corrector_steps: int = spec(1, POSITIVE)
  num_steps: int = spec(0, NON_NEGATIVE)                       # 0: the SDE's N
  probability_flow: bool = spec(False, boolean)
  langevin_step_rule: str = spec("batch", choice(*samplers.LANGEVIN_STEP_RULES))
  checkpoint: bool = spec(False, boolean)                       # jax.checkpoint each step (gradients: memory)


@dataclasses.dataclass(frozen=True)
class ODE(_Section):
  solver: str = spec("tsit5", choice(*samplers.SOLVERS))
  rtol: float = spec(1e-5, TOLERANCE)
  atol: float = spec(1e-5, TOLERANCE)
  num_steps: int = spec(0, NON_NEGATIVE)                       # 0: adaptive steps
  max_steps: int = spec(4096, POSITIVE)
  adjoint: str = spec("recursive_checkpoint", choice(*samplers.ADJOINTS))   # how jax.grad goes through the solve


@dataclasses.dataclass(frozen=True)
class ALD(_Section):
  num_steps: int = spec(10, POSITIVE)                          # noise levels
  corrector_steps: int = spec(100, POSITIVE)                   # Langevin steps per level
  langevin_step_size: float = spec(0.0, number(0.0))          # 0: NCSN's 0.2 sigma_L^2
  sigma_floor: float = spec(0.01, TOLERANCE)
  checkpoint: bool = spec(False, boolean)


@dataclasses.dataclass(frozen=True)
class EDMHeun(_Section):
  num_steps: int = spec(18, integer(2))                         # levels; sampling.nfe > 0 overrides
  grid: str = spec("edm", GRID)
  rho: float = spec(7.0, TOLERANCE)
  sigma_floor: float = spec(0.01, TOLERANCE)        # every SDE ends near sigma = 0.01
  s_churn: float = spec(0.0, number(0.0))
  s_tmin: float = spec(0.0, number(0.0))
  s_tmax: float = spec(math.inf, number(0.0, allow_inf=True))
  s_noise: float = spec(1.0, number(0.0))
  checkpoint: bool = spec(False, boolean)


@dataclasses.dataclass(frozen=True)
class DPMSolverPP(_Section):
  num_steps: int = spec(20, POSITIVE)                          # solver steps; sampling.nfe > 0 overrides
  order: int = spec(2, integer(1, 3))                          # 2M or 3M
  lower_order_final: bool = spec(True, boolean)
  sigma_floor: float = spec(0.01, TOLERANCE)        # every SDE ends near sigma = 0.01
  grid: str = spec("edm", GRID)
  rho: float = spec(7.0, TOLERANCE)
  checkpoint: bool = spec(False, boolean)


@dataclasses.dataclass(frozen=True)
class UniPC(_Section):
  num_steps: int = spec(20, POSITIVE)                          # solver steps; sampling.nfe > 0 overrides
  order: int = spec(2, integer(1, 3))                          # UniP order p (UniC: p + 1)
  lower_order_final: bool = spec(True, boolean)
  sigma_floor: float = spec(0.01, TOLERANCE)        # every SDE ends near sigma = 0.01
  grid: str = spec("logsnr", GRID)
  rho: float = spec(7.0, TOLERANCE)
  checkpoint: bool = spec(False, boolean)


METHOD_SECTIONS = {"pc": PC, "ode": ODE, "ald": ALD, "edm_heun": EDMHeun, "dpm_solver_pp": DPMSolverPP,
                   "unipc": UniPC}


@dataclasses.dataclass(frozen=True)
class Inpaint(_Section):
  """sampling.condition = "inpaint" / "colorize": samplers.get_inpainter's algorithm and its options."""
  algorithm: str = spec("smc", choice(*samplers.inpaint.INPAINT_ALGORITHMS))
  mask: str = spec("bottom_half", choice(*samplers.inpaint.IMAGE_MASKS))      # inpaint: the unknown region
  n_particles: int = spec(16, POSITIVE)                                         # smc
  ess_threshold: float = spec(0.5, number(0.0, 1.0))                           # smc: resample below this ESS share
  n_resample: int = spec(10, POSITIVE)                                          # repaint


CONDITIONS = ("none", "inpaint", "colorize", "class")
LABELLED_DATASETS = ("DIGITS", "CIFAR10", "SVHN")           # the data sets whose records carry class labels


@dataclasses.dataclass(frozen=True)
class Sampling(_Section):
  method: str = spec("pc", choice(*sorted(samplers.METHODS)))
  t_min: float = spec(1e-3, TIME_FLOOR, ("eps",))
  denoise: bool = spec(True, boolean, ("noise_removal",))
  # --mode sample: "inpaint" / "colorize" complete test images (training/conditional.py) with sampling.inpaint;
  # "class" samples given classes (training/conditional.py: classifier-free or classifier guidance).
  condition: str = spec("none", choice(*CONDITIONS))
  # condition = "class": the class of every sample (-1: sample i gets class i mod the number of classes), and
  # the guidance scale (samplers.classifier_free_score_fn / guided_score_fn: 1 the conditional score, 0 the
  # unconditional one, > 1 sharper towards the class).
  class_label: int = spec(-1, integer(-1))
  guidance_scale: float = spec(1.0, number(0.0))
  # condition = "class" with an unconditional network: classifier guidance by a noise-conditional classifier
  # trained with training.task = "classifier" (its config file and its run's workdir).
  classifier_config: str = spec("", text)
  classifier_workdir: str = spec("", text)
  # The exact number of score evaluations (final denoising included) of a fast method
  # (samplers.FAST_METHODS), which picks its own steps and orders; 0: the method's num_steps.
  nfe: int = spec(0, NON_NEGATIVE)
  pc: PC = dataclasses.field(default_factory=PC)
  ode: ODE = dataclasses.field(default_factory=ODE)
  ald: ALD = dataclasses.field(default_factory=ALD)
  edm_heun: EDMHeun = dataclasses.field(default_factory=EDMHeun)
  dpm_solver_pp: DPMSolverPP = dataclasses.field(default_factory=DPMSolverPP)
  unipc: UniPC = dataclasses.field(default_factory=UniPC)
  inpaint: Inpaint = dataclasses.field(default_factory=Inpaint)

  def __post_init__(self):
    if self.nfe and self.method not in samplers.FAST_METHODS:
      raise ValueError(f"sampling.nfe ({self.nfe}) is a budget for {list(samplers.FAST_METHODS)} only; "
                       f"sampling.method={self.method!r} counts sampling.{self.method}.num_steps (set sampling.nfe=0)")

  @property
  def options(self):
    """The configured method's section."""
    return getattr(self, self.method)


@dataclasses.dataclass(frozen=True)
class Eval(_Section):
  begin_ckpt: int = spec(9, NON_NEGATIVE)
  end_ckpt: int = spec(26, NON_NEGATIVE)
  batch_size: int = spec(1024, POSITIVE)
  enable_sampling: bool = spec(True, boolean)
  num_samples: int = spec(50000, POSITIVE)
  enable_loss: bool = spec(True, boolean)
  enable_bpd: bool = spec(False, boolean)
  bpd_dataset: str = spec("test", choice("train", "test"))
  bpd_max_examples: int = spec(0, NON_NEGATIVE)                # 0: the whole split
  bpd_rtol: float = spec(1e-5, TOLERANCE)
  bpd_atol: float = spec(1e-5, TOLERANCE)
  bpd_t_min: float = spec(1e-5, TIME_FLOOR)
  bpd_solver: str = spec("tsit5", choice(*samplers.SOLVERS))
  bpd_divergence: str = spec("hutchinson_rademacher", choice(*samplers.DIVERGENCES))
  bpd_n_probes: int = spec(1, POSITIVE)
  bpd_num_steps: int = spec(0, NON_NEGATIVE)                   # 0: adaptive steps
  bpd_max_steps: int = spec(4096, POSITIVE)
  bpd_per_sample: bool = spec(False, boolean)                  # one step-size sequence per example
  bpd_adjoint: str = spec("recursive_checkpoint", choice(*samplers.ADJOINTS))
  inception_path: str = spec("", text)
  inception_batch_size: int = spec(100, POSITIVE)
  fid_reference_split: str = spec("train", choice("train", "test"))
  fid_reference_examples: int = spec(0, NON_NEGATIVE)
  kid_reference_examples: int = spec(10000, POSITIVE)


@dataclasses.dataclass(frozen=True)
class Data(_Section):
  dataset: str = spec("CIFAR10", _kind(lambda v, where: choice(*DATASETS, lower=False)(
      v.upper() if isinstance(v, str) else v, where), "choice", options=tuple(DATASETS)))
  image_size: int = spec(32, POSITIVE)
  num_channels: int = spec(3, choice(1, 3, lower=False))
  centered: bool = spec(False, boolean)
  random_flip: bool = spec(True, boolean)
  uniform_dequantization: bool = spec(False, boolean)
  data_dir: str = spec("", text)                               # tensorflow-datasets directory
  path: str = spec("", text)                                   # FOLDER / ARRAY data: a folder or an .npz
  category: str = spec("", text)                               # LSUN: the tfds config, e.g. "church_outdoor"
  mixture: str = spec("example", choice("example"))            # GMM toy data
  dim: int = spec(2, POSITIVE)
  test_size: int = spec(4096, POSITIVE)


@dataclasses.dataclass(frozen=True)
class Optim(_Section):
  optimizer: str = spec("adam", choice("adam"))
  lr: float = spec(2e-4, number(0.0, open_lo=True))
  beta1: float = spec(0.9, number(0.0, 1.0, open_hi=True))
  eps: float = spec(1e-8, number(0.0, open_lo=True))          # Adam's epsilon
  weight_decay: float = spec(0.0, number(0.0))
  warmup: int = spec(5000, NON_NEGATIVE)
  grad_clip: float = spec(1.0, number(None))                  # <= 0: no clipping


@dataclasses.dataclass(frozen=True)
class Model(_Section):
  name: str = spec("ncsnpp", choice(*sorted(models.MODELS)))
  sigma_min: float = spec(0.01, TOLERANCE)
  sigma_max: float = spec(50.0, TOLERANCE)
  beta_min: float = spec(0.1, TOLERANCE)
  beta_max: float = spec(20.0, TOLERANCE)
  num_scales: int = spec(1000, integer(2))
  ema_rate: float = spec(0.9999, number(0.0, 1.0))
  scale_by_sigma: bool = spec(False, boolean)
  parameterization: str = spec("reference", choice(*models.PARAMETERIZATIONS))
  sigma_data: float = spec(0.5, TOLERANCE)                     # the edm parameterisation's data std
  # score_sde's fields for variants implemented once here: accepted so its configs read, and only their one
  # value is valid (this project's configs leave them out).
  normalization: str = spec("GroupNorm", choice("GroupNorm", lower=False))
  attention_type: str = spec("ddpm", choice("ddpm"))
  conv_size: int = spec(3, choice(3, lower=False))
  network: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # the network class's hyperparameters


@dataclasses.dataclass(frozen=True)
class Config(_Section):
  training: Training
  sampling: Sampling
  eval: Eval
  data: Data
  model: Model
  optim: Optim
  seed: int = 42


def as_config(config) -> Config:
  """``config`` itself if already typed, else ``parse_config(config)``: the entry of every mode."""
  return config if isinstance(config, Config) else parse_config(config)


# ------------------------------------------------------------------------------------ parsing
# score_sde's flat sampling fields and this project's former ones -> (section, field).
_SAMPLING_FLAT = {"predictor": ("pc", "predictor"), "corrector": ("pc", "corrector"), "snr": ("pc", "snr"),
                  "n_steps_each": ("pc", "corrector_steps"), "probability_flow": ("pc", "probability_flow"),
                  "rtol": ("ode", "rtol"), "atol": ("ode", "atol")}
_SAMPLING_FORMER_STEPS = {"pc": "num_steps", "ode": "num_steps", "ald": "num_steps", "edm_heun": "num_steps",
                          "dpm_solver_pp": "num_steps", "unipc": "num_steps"}


def _section(cls, values: Mapping, where: str, **prepared):
  """``cls`` from a plain dict: aliases resolved, unknown fields rejected, every value checked."""
  values = dict(values)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for f in fields.values():
    for alias in f.metadata.get("aliases", ()):
      if alias in values:
        if f.name in values:
          raise ValueError(f"{where}.{f.name} is given twice (also as its former name {where}.{alias})")
        values[f.name] = values.pop(alias)
  unknown = sorted(set(values) - set(fields) - set(prepared))
  if unknown:
    valid = sorted(n for n in fields if n != "network")
    raise ValueError(f"{where}.{unknown[0]} is not a config field (valid fields of {where}: {valid})")
  out = dict(prepared)
  for name, f in fields.items():
    if name in prepared or "check" not in f.metadata:
      continue
    out[name] = f.metadata["check"](values[name], f"{where}.{name}") if name in values else f.default
  section = cls(**out)
  object.__setattr__(section, "_where", where)
  return section


def _sampling(values: Mapping) -> Sampling:
  values = dict(values)
  method = choice(*sorted(samplers.METHODS))(values.get("method", "pc"), "sampling.method")
  sections = {name: dict(values.pop(name, None) or {}) for name in METHOD_SECTIONS}
  for flat, (section, field) in _SAMPLING_FLAT.items():
    if flat in values:
      sections[section][field] = values.pop(flat)
  if "n_steps" in values:                          # former: the configured method's grid steps / levels
    n = values.pop("n_steps")
    if n:
      sections[method][_SAMPLING_FORMER_STEPS[method]] = n
  prepared = {name: _section(cls, sections[name], f"sampling.{name}") for name, cls in METHOD_SECTIONS.items()}
  prepared["inpaint"] = _section(Inpaint, values.pop("inpaint", None) or {}, "sampling.inpaint")
  return _section(Sampling, values, "sampling", **prepared)


def _model(values: Mapping, data: Mapping) -> Model:
  values = dict(values)
  name = choice(*sorted(models.MODELS))(values.get("name", "ncsnpp"), "model.name")
  cls = models.MODELS[name]
  net_fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  network = models.model_kwargs(cls, {k: v for k, v in values.items() if k in net_fields}, data)
  for k in net_fields:
    values.pop(k, None)
  return _section(Model, values, "model", network=network)


def parse_config(config) -> Config:
  """The typed ``Config`` of a ConfigDict (or nested dict) with score_sde's section names.

  Raises:
    ValueError: an unknown field, a value of the wrong type or out of range, or an invalid choice;
      the message names the field (``section.field``), the value and what is valid.
  """
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  known = {"training", "sampling", "eval", "data", "model", "optim", "seed", "device"}
  unknown = sorted(set(raw) - known)
  if unknown:
    raise ValueError(f"{unknown[0]} is not a config section (valid: {sorted(known - {'device'})})")
  if "device" in raw:
    text(raw["device"], "device")                  # score_sde_pytorch's torch device; JAX uses every device it sees
  data = _section(Data, raw.get("data", {}), "data")
  out = Config(training=_section(Training, raw.get("training", {}), "training"),
               sampling=_sampling(raw.get("sampling", {})), eval=_section(Eval, raw.get("eval", {}), "eval"),
               data=data, model=_model(raw.get("model", {}), {"centered": data.centered}),
               optim=_section(Optim, raw.get("optim", {}), "optim"),
               seed=integer(0)(raw.get("seed", 42), "seed"))
  object.__setattr__(out, "_where", "")
  _check_consistency(out)
  return out


def _check_consistency(config: Config) -> None:
  """Rules between fields (each error names the fields)."""
  if config.eval.end_ckpt < config.eval.begin_ckpt:
    raise ValueError(f"eval.end_ckpt ({config.eval.end_ckpt}) must be >= eval.begin_ckpt ({config.eval.begin_ckpt})")
  if config.model.sigma_max <= config.model.sigma_min:
    raise ValueError(f"model.sigma_max ({config.model.sigma_max}) must exceed model.sigma_min ({config.model.sigma_min})")
  if config.model.beta_max < config.model.beta_min:
    raise ValueError(f"model.beta_max ({config.model.beta_max}) must be >= model.beta_min ({config.model.beta_min})")
  num_classes = int(config.model.network.get("num_classes", 0))
  if num_classes and config.data.dataset not in LABELLED_DATASETS:
    raise ValueError(f"model.num_classes={num_classes} needs labelled data ({list(LABELLED_DATASETS)}), got "
                     f"data.dataset={config.data.dataset!r}")
  classifier = config.model.name == "classifier"
  if classifier != (config.training.task == "classifier"):
    raise ValueError(f"training.task={config.training.task!r} and model.name={config.model.name!r} disagree: a "
                     f"classifier run has training.task='classifier' and model.name='classifier'")
  s = config.sampling
  if s.condition == "class" and classifier:
    raise ValueError("sampling.condition='class' samples with a score model's config; the classifier goes in "
                     "sampling.classifier_config and sampling.classifier_workdir")
  if s.condition == "class" and num_classes and s.classifier_config:
    raise ValueError("sampling.classifier_config is set for a class-conditional network (model.num_classes > 0): "
                     "use classifier-free guidance alone (leave sampling.classifier_config empty)")
  if s.condition == "class" and not num_classes and not (s.classifier_config and s.classifier_workdir):
    raise ValueError("sampling.condition='class' needs a class-conditional network (model.num_classes > 0, e.g. "
                     "--config.model.num_classes=10 on digits) or a classifier (sampling.classifier_config and "
                     "sampling.classifier_workdir)")
  if s.condition == "class" and num_classes and s.class_label >= num_classes:
    raise ValueError(f"sampling.class_label must be -1 or in 0 .. {num_classes - 1} (model.num_classes={num_classes}), "
                     f"got {s.class_label}")
  if config.data.dataset != "GMM":
    levels = len(config.model.network.get("ch_mult", ()))
    if levels and config.data.image_size % 2 ** (levels - 1):
      raise ValueError(f"data.image_size ({config.data.image_size}) must be divisible by 2^(len(model.ch_mult) - 1) "
                       f"= {2 ** (levels - 1)}")


# ----------------------------------------------------------------------- derived run options
def sampler_options(config: Config) -> tuple[str, dict]:
  """(method, options) for ``samplers.get_sampler``: the method's section plus t_min and denoise.

  A discrete-ladder model (``training.continuous=False``) is sampled by PC on its own ladder, as
  score_sde does (``ladder=True``, num_steps = the SDE's N).
  """
  s = config.sampling
  options = {f.name: getattr(s.options, f.name) for f in dataclasses.fields(s.options)}
  options.update(t_min=s.t_min, denoise=s.denoise)
  if s.nfe:                                        # the exact budget replaces the method's num_steps
    options["nfe"] = s.nfe
  if s.method == "pc":
    options["num_steps"] = None if not options["num_steps"] or not config.training.continuous else options["num_steps"]
    options["ladder"] = not config.training.continuous
  elif s.method == "ode":
    options["num_steps"] = options["num_steps"] or None
  elif s.method == "ald":
    options["langevin_step_size"] = options["langevin_step_size"] or None
  return s.method, options


def likelihood_options(config: Config) -> dict:
  """Keyword arguments of ``samplers.get_likelihood_fn`` from the eval.bpd_* fields."""
  e = config.eval
  return dict(rtol=e.bpd_rtol, atol=e.bpd_atol, t_min=e.bpd_t_min, solver=e.bpd_solver, divergence=e.bpd_divergence,
              n_probes=e.bpd_n_probes, num_steps=e.bpd_num_steps or None, max_steps=e.bpd_max_steps,
              per_sample=e.bpd_per_sample, adjoint=e.bpd_adjoint)
