"""The model registry and the one place a ConfigDict becomes typed network hyperparameters."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

import sde_lib
from models.classifier import NoiseConditionalClassifier
from models.mlp import MLP
from models.ncsnpp import DDPM, NCSNpp
from models.score import get_score_fn

MODELS: dict[str, type[nn.Module]] = {"ncsnpp": NCSNpp, "ddpm": DDPM, "mlp": MLP,
                                      "classifier": NoiseConditionalClassifier}
_FROM_DATA = {"centered"}                    # fields read from config.data rather than config.model


def _coerce(cls_name: str, field: dataclasses.Field, value: Any):
  """Converts a ConfigDict value to the field's declared type, or raises naming the field."""
  kind, default = field.type, field.default
  where = f"{'data' if field.name in _FROM_DATA else 'model'}.{field.name}"
  try:
    if isinstance(default, bool):
      if not isinstance(value, bool):
        raise TypeError
      return value
    if isinstance(default, int):
      if isinstance(value, bool) or int(value) != value:
        raise TypeError
      return int(value)
    if isinstance(default, float):
      if isinstance(value, bool):
        raise TypeError
      return float(value)
    if isinstance(default, str):
      if not isinstance(value, str):
        raise TypeError
      return value.lower()
    if isinstance(default, tuple):
      return tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{where} must be like {default!r} ({kind}) for model {cls_name}, got {value!r}") from None
  return value


def _check_range(cls, name: str, where: str, value):
  """Integers (and tuple entries) >= 1, finite floats, and each class's ``RANGES`` / ``NONEMPTY``."""
  ranges, nonempty = getattr(cls, "RANGES", {}), getattr(cls, "NONEMPTY", ())
  if isinstance(value, tuple):
    if name in nonempty and not value:
      raise ValueError(f"{where} must not be empty, got {value!r}")
    if any(v < 1 for v in value):
      raise ValueError(f"{where} entries must be integers >= 1, got {value!r}")
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    lo, hi = ranges.get(name, (1, None) if isinstance(value, int) else (None, None))
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
      bound = " and ".join(b for b in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if b) or "finite"
      raise ValueError(f"{where} must be {bound}, got {value!r}")


def model_kwargs(cls: type[nn.Module], model_config, data_config=None) -> dict[str, Any]:
  """Typed keyword arguments for ``cls`` from config.model (and config.data.centered).

  Every attribute of ``cls`` must be present in the config (but those in the class's ``OPTIONAL``,
  which take their default when absent, e.g. ``num_classes`` in score_sde's configs); values are
  type-checked and choice fields validated. Fields of config.model the network does not use (SDE parameters, EMA rate...)
  are ignored. The class's ``RUN_FIELDS`` (remat, compute dtype) are not architecture: ``get_model``
  sets them from config.training, and config.model must not hold them.

  Raises:
    ValueError: a missing field, a value of the wrong type, or an invalid choice (all named).
  """
  kwargs = {}
  run_fields = getattr(cls, "RUN_FIELDS", ())
  for field in dataclasses.fields(cls):
    if field.name in ("parent", "name"):
      continue
    if field.name in run_fields:
      if field.name in model_config:
        raise ValueError(f"model.{field.name} is not a model field: set training.{field.name}")
      continue
    source = data_config if field.name in _FROM_DATA else model_config
    prefix = "data" if field.name in _FROM_DATA else "model"
    if (source is None or field.name not in source) and field.name in getattr(cls, "OPTIONAL", ()):
      kwargs[field.name] = field.default
      continue
    if source is None or field.name not in source:
      raise ValueError(f"{prefix}.{field.name} is missing: model {cls.__name__} needs it (default {field.default!r})")
    value = _coerce(cls.__name__, field, source[field.name])
    _check_range(cls, field.name, f"{prefix}.{field.name}", value)
    choices = getattr(cls, "CHOICES", {}).get(field.name)
    if choices is not None and value not in choices:
      raise ValueError(f"{prefix}.{field.name} must be one of {list(choices)}, got {value!r}")
    kwargs[field.name] = value
  multiple = getattr(cls, "MULTIPLE_OF", {})
  for name, m in multiple.items():                   # e.g. DDPM's channels: its GroupNorms have 32 groups
    values = kwargs[name] if isinstance(kwargs[name], tuple) else (kwargs[name],)
    if name == "nf" and "ch_mult" in kwargs:
      values = tuple(kwargs["nf"] * k for k in kwargs["ch_mult"])
    if any(v % m for v in values):
      raise ValueError(f"model.{name} must make every level's channels (nf * ch_mult) a multiple of {m} for "
                       f"{cls.__name__}, got nf={kwargs.get('nf')}, ch_mult={kwargs.get('ch_mult')}")
  return kwargs


def get_model(model, *, training: bool = False, **run_fields) -> nn.Module:
  """The network of a typed model section (``schema.Model``: ``name`` and the typed ``network``).

  ``run_fields``: the class's ``RUN_FIELDS`` (remat, compute dtype) for the network the training step
  differentiates; otherwise they keep their defaults (no remat, float32). Either way the parameter tree is
  the same. Also accepted, for callers holding a whole config: a typed ``schema.Config`` (``training=True``
  then reads the run fields from its training section) or a ConfigDict in score_sde's layout (its
  ``model`` fields and ``data.centered`` are typed here by ``model_kwargs``).

  Raises:
    ValueError: an unknown name (the valid ones are listed) or a bad hyperparameter.
  """
  section = getattr(model, "model", model)
  name = str(section.name).lower()
  if name not in MODELS:
    raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {section.name!r}")
  cls = MODELS[name]
  network = getattr(section, "network", None)
  if not isinstance(network, Mapping):                      # a ConfigDict in score_sde's layout
    network = model_kwargs(cls, section, getattr(model, "data", None))
  if training and hasattr(model, "training"):
    run_fields = {name: getattr(model.training, name) for name in getattr(cls, "RUN_FIELDS", ())} | run_fields
  return cls(**network, **run_fields)


# Compiler options of programs that run once or a few times per process (parameter initialisation, the
# evaluation loss): LLVM's optimisation off. XLA's HLO passes still run, so they compute the same values;
# they compile ~4x faster (the digits default's initialisation 2.4 s against 9.7 s on 2 CPU cores, with
# the same parameters) and run slower, which a program that runs once does not feel.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def initializer(model: nn.Module, shape) -> Callable:
  """``init(key) -> params`` of ``model`` for inputs of ``shape`` [B, ...] (labels are ones), unjitted: for
  building into a larger program (``training.state.create_train_state``)."""
  shape = tuple(shape)

  def init(key):
    return model.init({"params": key, "dropout": key}, jnp.zeros(shape), jnp.ones(shape[:1]))["params"]

  return init


def init_params(model: nn.Module, key: jax.Array, shape) -> dict:
  """Initial parameters of ``model`` for inputs of ``shape`` [B, ...] (labels are ones), built in one
  compiled program (eager initialisation compiles every layer's operations one by one), compiled with
  ``RUN_ONCE_COMPILER_OPTIONS``. Call it outside ``jax.jit`` (JAX takes compiler options only at the top
  level); inside, use ``initializer``."""
  return jax.jit(initializer(model, shape), compiler_options=RUN_ONCE_COMPILER_OPTIONS)(key)


def count_params(model: nn.Module, shape) -> int:
  """The number of parameters for inputs of ``shape``, from ``jax.eval_shape`` (nothing allocated)."""
  shapes = jax.eval_shape(initializer(model, shape), jax.random.key(0))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(shapes))


def make_apply_fn(model: nn.Module, class_labels=None) -> Callable:
  """``apply_fn(params, x, labels, train=False, rngs=None, class_labels=class_labels, **extra)``, pure: the
  network's output (``extra``: further keyword arguments of the network, e.g. a classifier's input_scale).

  ``class_labels`` [B] (ints; ``model.num_classes`` is the null label) condition a class-conditional
  network; None leaves the call unconditional (the null label, for a class-conditional network).
  """
  default_labels = class_labels

  def apply_fn(params, x, labels, train: bool = False, rngs=None, class_labels=default_labels, **extra):
    if class_labels is not None:
      extra["class_labels"] = class_labels
    return model.apply({"params": params}, x, labels, train=train, rngs=rngs, **extra)

  return apply_fn


def score_options(config) -> dict:
  """``get_score_fn``'s keyword arguments (continuous, parameterisation) of a typed ``schema.Config`` or a
  ConfigDict in score_sde's layout (``training.continuous``, ``model.parameterization``, ...)."""
  if hasattr(config, "score"):
    s = config.score
    return dict(continuous=config.training.continuous, parameterization=s.parameterization,
                scale_by_sigma=s.scale_by_sigma, sigma_data=s.sigma_data)
  m = config.model
  return dict(continuous=bool(config.training.get("continuous", True)),
              parameterization=m.get("parameterization", "reference"), scale_by_sigma=bool(m.get("scale_by_sigma", False)),
              sigma_data=float(m.get("sigma_data", 0.5)))


def score_fn_from_config(config, params, *, train: bool = False, rngs=None, class_labels=None) -> Callable:
  """``score_fn(x [B, H, W, C], t [B]) -> [B, H, W, C]`` of a model from its config and parameters.

  ``config``: a typed ``schema.Config`` or a ConfigDict in score_sde's layout (read directly). x is in the
  config's data range ([-1, 1] if ``data.centered`` else [0, 1]; the network maps the latter itself), t in
  [0, T]. The SDE, network, labels and output scaling follow the config (score_sde's ``mutils.get_score_fn``
  for ``"reference"``). ``class_labels`` [B]: the class of each example, for a network with
  ``model.num_classes > 0`` (None: its unconditional score, the null label). A run builds its score function
  once (``training.train.Setup.score_fn``); this is the convenience for a config and parameters in hand.
  """
  return get_score_fn(sde_lib.get_sde(config), make_apply_fn(get_model(config), class_labels), params,
                      train=train, rngs=rngs, **score_options(config))
