"""The sections of the typed config other than sampling: sde, model (the network), score (the
parameterisation), ema, training, optim, data, eval.

Config files keep score_sde's layout (``training.sde``; the SDE parameters, the EMA rate and the
parameterisation in the flat ``model`` section), read here as aliases of the sections they belong to.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import models
import samplers
import sde_lib
from data_lib.images import DATASETS
from schema.fields import Section, boolean, build_section, choice, integer, labelled, number, spec, text

POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
TOLERANCE = number(0.0, open_lo=True)
TIME_FLOOR = samplers.common.TIME_FLOOR           # the samplers' time-floor check, also the loss's


@dataclasses.dataclass(frozen=True)
class Sde(Section):
  """The forward SDE (``sde_lib.get_sde``): its name and parameters (VE: sigma_min, sigma_max; VP and sub-VP:
  beta_min, beta_max; all: num_scales = N of the discrete ladder)."""
  name: str = spec("vesde", choice(*sorted(sde_lib.SDES)))
  sigma_min: float = spec(0.01, TOLERANCE)
  sigma_max: float = spec(50.0, TOLERANCE)
  beta_min: float = spec(0.1, TOLERANCE)
  beta_max: float = spec(20.0, TOLERANCE)
  num_scales: int = spec(1000, integer(2))


@dataclasses.dataclass(frozen=True)
class Score(Section):
  """How a network's output becomes a score (``models.get_score_fn``)."""
  parameterization: str = spec("reference", choice(*models.PARAMETERIZATIONS))
  scale_by_sigma: bool = spec(False, boolean)
  sigma_data: float = spec(0.5, TOLERANCE)                     # the edm parameterisation's data std


@dataclasses.dataclass(frozen=True)
class Ema(Section):
  rate: float = spec(0.9999, number(0.0, 1.0))               # warmed up: models.ema_warmup_rate


@dataclasses.dataclass(frozen=True)
class Model(Section):
  """The network: its name and its class's typed hyperparameters (``network``)."""
  name: str = spec("ncsnpp", choice(*sorted(models.MODELS)))
  # score_sde's fields for variants implemented once here: accepted so its configs read, and only their one
  # value is valid (this project's configs leave them out).
  normalization: str = spec("GroupNorm", choice("GroupNorm", lower=False))
  attention_type: str = spec("ddpm", choice("ddpm"))
  conv_size: int = spec(3, choice(3, lower=False))
  network: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # the network class's hyperparameters
  # Fields of the config's model section that belong to another network than ``name`` (a config whose network
  # was swapped on the command line); they are not used.
  ignored: tuple = ()


@dataclasses.dataclass(frozen=True)
class Training(Section):
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
  # the loss's lambda(t) (sde_lib.get_loss_fn): "score" s^2, "likelihood" g^2 (as likelihood_weighting=True),
  # "velocity" the conditional flow-matching loss |v_theta - v|^2
  weighting: str = spec("score", choice(*sde_lib.losses.WEIGHTINGS))
  steps_per_call: int = spec(1, POSITIVE, ("n_jitted_steps",))
  t_min: float = spec(1e-5, TIME_FLOOR)                        # the loss's smallest time
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
  # How the network's backward pass is computed (models.layers.BACKWARDS; parameters, function and gradient
  # unchanged): "xla" (autodiff), "materialised" (autodiff, each conv / NIN / GroupNorm output's cotangent
  # computed once: benchmarks/results/cotangent_barrier.md), "taps" (models/conv.py's written-out conv VJP;
  # 1.13-1.26x slower on 2 CPU cores, benchmarks/results/networks_vs_reference_conv_vjp.md), "auto"
  # ("materialised" on CPU, "xla" on other backends, where nothing was measured).
  backward: str = spec("auto", choice(*models.layers.BACKWARDS))


@dataclasses.dataclass(frozen=True)
class Eval(Section):
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
class Data(Section):
  dataset: str = spec("CIFAR10", labelled(lambda v, where: choice(*DATASETS, lower=False)(
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
class Optim(Section):
  optimizer: str = spec("adam", choice("adam"))
  lr: float = spec(2e-4, number(0.0, open_lo=True))
  beta1: float = spec(0.9, number(0.0, 1.0, open_hi=True))
  eps: float = spec(1e-8, number(0.0, open_lo=True))          # Adam's epsilon
  weight_decay: float = spec(0.0, number(0.0))
  warmup: int = spec(5000, NON_NEGATIVE)
  grad_clip: float = spec(1.0, number(None))                  # <= 0: no clipping


# score_sde's layout -> the sections: (raw section, raw field) -> (section, field).
SCORE_SDE_FIELDS = {("training", "sde"): ("sde", "name"), ("model", "sigma_min"): ("sde", "sigma_min"),
                    ("model", "sigma_max"): ("sde", "sigma_max"), ("model", "beta_min"): ("sde", "beta_min"),
                    ("model", "beta_max"): ("sde", "beta_max"), ("model", "num_scales"): ("sde", "num_scales"),
                    ("model", "parameterization"): ("score", "parameterization"),
                    ("model", "scale_by_sigma"): ("score", "scale_by_sigma"),
                    ("model", "sigma_data"): ("score", "sigma_data"), ("model", "ema_rate"): ("ema", "rate")}


def regroup(raw: dict) -> tuple[dict, dict]:
  """score_sde's layout moved into the sections (a field given in both places is an error naming both), and
  {"section.field": "score_sde's section.field"} for the fields moved (errors name the field as written)."""
  raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
  moved = {}
  for (src, field), (dst, name) in SCORE_SDE_FIELDS.items():
    if field in raw.get(src, {}):
      target = raw.setdefault(dst, {})
      if name in target:
        raise ValueError(f"{dst}.{name} is given twice (also as score_sde's {src}.{field})")
      target[name] = raw[src].pop(field)
      moved[f"{dst}.{name}"] = f"{src}.{field}"
  return raw, moved


def build_moved(cls, values, where: str, moved: dict):
  """``build_section`` whose errors name a moved field by the name the config used."""
  try:
    return build_section(cls, values, where)
  except ValueError as e:
    message = str(e)
    for new, old in moved.items():
      if message.startswith(new + " "):
        raise ValueError(old + message[len(new):]) from None
    raise


def parse_model(values: Mapping, data: Mapping) -> Model:
  """The model section: the network named by ``name`` takes the fields of its class; fields that only other
  registered networks have are set aside (``Model.ignored``, logged) so that ``--config.model.name`` swaps
  the network of any config."""
  values = dict(values)
  name = choice(*sorted(models.MODELS))(values.get("name", "ncsnpp"), "model.name")
  fields_of = lambda cls: {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  mine = fields_of(models.MODELS[name])
  others = set().union(*(fields_of(c) for n, c in models.MODELS.items() if n != name)) - mine
  ignored = tuple(sorted(k for k in values if k in others))
  if ignored:
    logging.warning("model.name=%r does not use model.%s (fields of other networks): ignored", name,
                    ", model.".join(ignored))
  network = models.model_kwargs(models.MODELS[name], {k: v for k, v in values.items() if k in mine}, data)
  rest = {k: v for k, v in values.items() if k not in mine and k not in others}
  return build_section(Model, rest, "model", network=network, ignored=ignored)


def likelihood_options(config) -> dict:
  """Keyword arguments of ``samplers.get_likelihood_fn`` from the eval.bpd_* fields."""
  e = config.eval
  return dict(rtol=e.bpd_rtol, atol=e.bpd_atol, t_min=e.bpd_t_min, solver=e.bpd_solver, divergence=e.bpd_divergence,
              n_probes=e.bpd_n_probes, num_steps=e.bpd_num_steps or None, max_steps=e.bpd_max_steps,
              per_sample=e.bpd_per_sample, adjoint=e.bpd_adjoint)


__all__ = ["Sde", "Score", "Ema", "Model", "Training", "Eval", "Data", "Optim", "regroup", "parse_model",
           "likelihood_options"]
