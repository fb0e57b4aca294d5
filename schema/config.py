"""The typed ``Config`` and ``parse_config``: a ConfigDict becomes a validated, frozen ``Config`` once.

``parse_config(config_dict)`` checks the type and range of every field, maps score_sde's field names to the
sections they belong to, rejects unknown fields, and returns frozen dataclasses; nothing downstream reads a
ConfigDict. Every error is one ValueError naming the field, the value received and what is valid.
"""

from __future__ import annotations

import dataclasses

from schema.fields import Section, build_section, integer, text
from schema.sampling import Sampling, parse_sampling
from schema.sections import Data, Ema, Eval, Model, Optim, Score, Sde, Training, build_moved, parse_model, regroup

LABELLED_DATASETS = ("DIGITS", "CIFAR10", "SVHN")           # the data sets whose records carry class labels
SECTIONS = ("sde", "model", "score", "ema", "training", "sampling", "eval", "data", "optim", "seed")


@dataclasses.dataclass(frozen=True)
class Config(Section):
  sde: Sde
  model: Model
  score: Score
  ema: Ema
  training: Training
  sampling: Sampling
  eval: Eval
  data: Data
  optim: Optim
  seed: int = 42

  @property
  def num_classes(self) -> int:
    """The classes of a class-conditional network or a classifier (0: unconditional)."""
    return int(self.model.network.get("num_classes", 0))


def as_config(config) -> Config:
  """``config`` itself if already typed, else ``parse_config(config)``: the entry of every public mode."""
  return config if isinstance(config, Config) else parse_config(config)


def parse_config(config) -> Config:
  """The typed ``Config`` of a ConfigDict (or nested dict) in score_sde's layout or with the sections.

  Raises:
    ValueError: an unknown field, a value of the wrong type or out of range, or an invalid choice;
      the message names the field (``section.field``), the value and what is valid.
  """
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  unknown = sorted(set(raw) - set(SECTIONS) - {"device"})
  if unknown:
    raise ValueError(f"{unknown[0]} is not a config section (valid: {sorted(SECTIONS)})")
  if "device" in raw:
    text(raw["device"], "device")                  # score_sde_pytorch's torch device; JAX uses every device it sees
  raw, moved = regroup(raw)
  data = build_section(Data, raw.get("data", {}), "data")
  out = Config(sde=build_moved(Sde, raw.get("sde", {}), "sde", moved),
               model=parse_model(raw.get("model", {}), {"centered": data.centered}),
               score=build_moved(Score, raw.get("score", {}), "score", moved),
               ema=build_moved(Ema, raw.get("ema", {}), "ema", moved),
               training=build_section(Training, raw.get("training", {}), "training"),
               sampling=parse_sampling(raw.get("sampling", {})), eval=build_section(Eval, raw.get("eval", {}), "eval"),
               data=data, optim=build_section(Optim, raw.get("optim", {}), "optim"),
               seed=integer(0)(raw.get("seed", 42), "seed"))
  object.__setattr__(out, "_where", "")
  check_consistency(out)
  return out


def check_consistency(config: Config) -> None:
  """Rules between fields (each error names the fields)."""
  if config.eval.end_ckpt < config.eval.begin_ckpt:
    raise ValueError(f"eval.end_ckpt ({config.eval.end_ckpt}) must be >= eval.begin_ckpt ({config.eval.begin_ckpt})")
  if config.sde.sigma_max <= config.sde.sigma_min:
    raise ValueError(f"model.sigma_max ({config.sde.sigma_max}) must exceed model.sigma_min ({config.sde.sigma_min}) "
                     f"(sde.sigma_max, sde.sigma_min)")
  if config.sde.beta_max < config.sde.beta_min:
    raise ValueError(f"model.beta_max ({config.sde.beta_max}) must be >= model.beta_min ({config.sde.beta_min}) "
                     f"(sde.beta_max, sde.beta_min)")
  num_classes = config.num_classes
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
