"""The published score_sde checkpoints: recognise the format, read it safely, convert it.

Two formats (detected from the bytes, not the file name):
  * ``score_sde_pytorch``: ``torch.save({'model': state_dict, 'ema': {'decay', 'num_updates',
    'shadow_params'}, 'optimizer': ..., 'step': ...})``, a zip + pickle (score_sde_pytorch
    ``utils.save_checkpoint``). Model keys start with ``module.`` (DataParallel); ``shadow_params``
    is an unnamed list of the *trainable* parameters in ``model.parameters()`` order, so the fixed
    Fourier ``W`` and the ``sigmas`` buffer come from ``'model'``. Read by ``safeio.torch_pickle``,
    which never runs code from the file and checks every size, offset and stride it states.
  * ``score_sde`` (JAX): flax msgpack of ``State(step, optimizer, lr, model_state, ema_rate,
    params_ema, rng)`` (score_sde ``run_lib.py``, ``flax.training.checkpoints``); read as a plain
    msgpack tree by ``safeio.flax_msgpack`` (numeric dtypes only, sizes checked), so no legacy
    ``flax.optim`` is needed: raw parameters are ``optimizer['target']``.
Both files are untrusted: every failure is a ``CheckpointError`` whose message starts with the path,
and the structure is validated (parameters are dicts of names to floating arrays, ``0 <= step < 2**31``).
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np

from models import port
from safeio import flax_msgpack, torch_pickle
from safeio.untrusted import CheckpointError
from models.registry import get_model

FORMATS = ("score_sde_pytorch", "score_sde")
MAX_STEP = 2**31 - 1                   # steps are int32 in the training state
_MAX_DEPTH = 16                        # parameter trees: score_sde's deepest is 4 levels


def detect_format(path: str) -> str:
  """One of ``FORMATS``, from the file's contents.

  Raises:
    FileNotFoundError: no such file.
    CheckpointError: not a regular file, or neither format (with what the file looks like).
  """
  if torch_pickle.torch_format(path):           # also refuses FIFOs and devices before opening them
    return "score_sde_pytorch"
  with open(path, "rb") as f:
    head = f.read(16)
  if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:        # pickle PROTO opcode (not an empty map)
    raise CheckpointError(f"{path} is a raw pickle without torch's header, not a torch.save file: it will not "
                          "be unpickled")
  if head[:1] and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):     # a msgpack map (State's fields)
    return "score_sde"
  raise CheckpointError(f"{path} is neither a score_sde_pytorch .pth (zip) nor a score_sde flax msgpack checkpoint "
                        f"(first bytes {head[:8]!r})")


@dataclasses.dataclass
class Checkpoint:
  """A published checkpoint's contents: its format, step, raw and EMA parameters in its own naming
  (torch: flat ``state_dict`` names without ``module.``; flax: a nested dict)."""

  format: str
  step: int
  params: dict
  ema_params: dict | None


def _trainable_names(state_dict: dict[str, np.ndarray]) -> list[str]:
  """state-dict names of score_sde_pytorch's trainable parameters, in ``model.parameters()`` order:
  everything but the ``sigmas`` buffer and the fixed 1-D Fourier ``W`` (requires_grad=False)."""
  return [k for k, v in state_dict.items()
          if k.rsplit(".", 1)[-1] != "sigmas" and not (k.rsplit(".", 1)[-1] == "W" and np.ndim(v) == 1)]


def _is_float(value) -> bool:
  return isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype == ml_dtypes.bfloat16)


def _tensors(tree, what: str, path: str) -> dict:
  """``tree`` if it is a dict of str names to floating arrays (nested when the format nests them)."""
  todo = [(tree, what, 0)]
  while todo:
    node, where, depth = todo.pop()
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
      raise CheckpointError(f"{path}: {where} is a {type(node).__name__}, not a dict of parameter names to arrays")
    for key, value in node.items():
      if type(key) is not str:
        raise CheckpointError(f"{path}: {where} has a key of type {type(key).__name__} (names are strings)")
      if isinstance(value, dict):
        todo.append((value, f"{where}[{key[:80]!r}]", depth + 1))
      elif not _is_float(value):
        kind = f"array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
        raise CheckpointError(f"{path}: {where}[{key[:80]!r}] is a {kind}, not a floating-point array")
  return tree


def _step(value, path: str) -> int:
  """The training step: an int (or 0-d integer array) in [0, MAX_STEP]."""
  if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
    value = int(value)
  if type(value) is not int or not 0 <= value <= MAX_STEP:
    shown = value if type(value) is int else type(value).__name__
    raise CheckpointError(f"{path}: step is {shown}; a step is an integer in [0, {MAX_STEP}]")
  return value


def _read_torch(path: str) -> Checkpoint:
  obj = torch_pickle.load_pth(path)
  if not isinstance(obj, dict) or "model" not in obj:
    keys = sorted(k for k in obj if type(k) is str)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path} holds no 'model' state dict: not a score_sde_pytorch checkpoint (keys {keys})")
  model = _tensors(obj["model"], "'model'", path)
  model = {k[len("module."):] if k.startswith("module.") else k: v for k, v in model.items()}
  ema, record = None, obj.get("ema")
  if record is not None and not isinstance(record, dict):
    raise CheckpointError(f"{path}: 'ema' is a {type(record).__name__}, not score_sde_pytorch's EMA state dict")
  shadow = (record or {}).get("shadow_params")
  if shadow is not None:
    if not isinstance(shadow, list) or not all(_is_float(v) for v in shadow):
      raise CheckpointError(f"{path}: the EMA's shadow_params is not a list of floating-point arrays")
    names = _trainable_names(model)
    if len(names) != len(shadow):
      raise CheckpointError(f"{path}: the EMA holds {len(shadow)} tensors, the model {len(names)} trainable ones")
    ema = dict(model)
    for name, value in zip(names, shadow):
      if value.shape != model[name].shape:
        raise CheckpointError(f"{path}: EMA tensor for {name} has shape {value.shape}, the model {model[name].shape}")
      ema[name] = value
  return Checkpoint("score_sde_pytorch", _step(obj.get("step", 0), path), model, ema)


def _read_flax(path: str) -> Checkpoint:
  state = flax_msgpack.load_msgpack(path)
  optimizer = state.get("optimizer") if isinstance(state, dict) else None
  if not isinstance(optimizer, dict) or "target" not in optimizer or "params_ema" not in state:
    keys = sorted(k for k in state if type(k) is str)[:8] if isinstance(state, dict) else type(state).__name__
    raise CheckpointError(f"{path} is a msgpack file but not a score_sde State (keys {keys})")
  params = _tensors(optimizer["target"], "optimizer.target", path)
  ema = _tensors(state["params_ema"], "params_ema", path)
  # msgpack has no checksum: the raw and EMA trees must agree leaf for leaf (names, shapes, dtypes), so a
  # damaged name or shape in either is caught here rather than half-converted.
  if _leaves(params) != _leaves(ema):
    different = sorted(set(_leaves(params).items()) ^ set(_leaves(ema).items()))[:1]
    raise CheckpointError(f"{path}: optimizer.target and params_ema differ (first: {different[0][0][:120]})")
  return Checkpoint("score_sde", _step(state.get("step", 0), path), params, ema)


def _leaves(tree: dict, prefix: str = "") -> dict:
  """{'a/b/c': (shape, dtype name)} of a validated parameter tree (depth bounded by ``_tensors``)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaves(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = (value.shape, value.dtype.name)
  return out


def read_checkpoint(path: str) -> Checkpoint:
  """Reads either published format (see the module docstring) without torch and without code execution.

  Raises:
    FileNotFoundError: no file at ``path``.
    CheckpointError (a ValueError; ``torch_pickle.UnsafePickleError`` is one): an unknown format, a
      pickle that asks for anything but tensors and containers, sizes or offsets that do not fit, or
      contents that are not a score_sde checkpoint; the message starts with ``path``.
  """
  return _read_torch(path) if detect_format(path) == "score_sde_pytorch" else _read_flax(path)


def convert(checkpoint: Checkpoint, config, *, ema: bool = True) -> dict:
  """Our parameters for ``config``'s network from a read checkpoint (EMA by default).

  Raises:
    ValueError: ``ema=True`` but the checkpoint has no EMA, or tensors that do not fit (named).
  """
  source = checkpoint.ema_params if ema else checkpoint.params
  if source is None:
    raise ValueError("the checkpoint holds no EMA parameters: pass ema=False (--no-ema) for the raw ones")
  model = get_model(config)
  shape = (1, int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
  if checkpoint.format == "score_sde_pytorch":
    return port.from_torch_state_dict(model, shape, source)
  return port.from_flax_params(model, shape, source)


def load_score_sde_checkpoint(path: str, config, ema: bool = True) -> dict:
  """Parameters of this project's network for ``config`` from a score_sde_pytorch ``.pth`` or a
  score_sde flax checkpoint (format detected from the contents; EMA weights unless ``ema=False``)."""
  return convert(read_checkpoint(path), config, ema=ema)
