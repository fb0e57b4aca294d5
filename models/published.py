"""The published score_sde checkpoints: recognise the format, read it safely, convert it.

Two formats (detected from the bytes, not the file name):
  * ``score_sde_pytorch``: ``torch.save({'model': state_dict, 'ema': {'decay', 'num_updates',
    'shadow_params'}, 'optimizer': ..., 'step': ...})``, a zip + pickle (score_sde_pytorch
    ``utils.save_checkpoint``). Model keys start with ``module.`` (DataParallel); ``shadow_params``
    is an unnamed list of the *trainable* parameters in ``model.parameters()`` order, so the fixed
    Fourier ``W`` and the ``sigmas`` buffer come from ``'model'``. Read by ``models.torch_pickle``,
    which never runs code from the file.
  * ``score_sde`` (JAX): flax msgpack of ``State(step, optimizer, lr, model_state, ema_rate,
    params_ema, rng)`` (score_sde ``run_lib.py``, ``flax.training.checkpoints``); read with
    ``flax.serialization.msgpack_restore``, so no legacy ``flax.optim`` is needed: raw parameters
    are ``optimizer['target']``.
"""

from __future__ import annotations

import dataclasses
import os

import flax.serialization
import numpy as np

from models import port, torch_pickle
from models.registry import get_model

FORMATS = ("score_sde_pytorch", "score_sde")


def detect_format(path: str) -> str:
  """One of ``FORMATS``, from the file's contents.

  Raises:
    FileNotFoundError: no such file.
    ValueError: neither format (with what the file looks like).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint file at {path}")
  if torch_pickle.is_torch_zip(path):
    return "score_sde_pytorch"
  with open(path, "rb") as f:
    head = f.read(16)
  if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:        # pickle PROTO opcode (not an empty map)
    raise ValueError(f"{path} is a raw pickle (torch's pre-1.6 format?), not a zip: re-save it with a current "
                     "torch.save; it will not be unpickled")
  if head[:1] and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):     # a msgpack map (State's fields)
    return "score_sde"
  raise ValueError(f"{path} is neither a score_sde_pytorch .pth (zip) nor a score_sde flax msgpack checkpoint "
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


def read_checkpoint(path: str) -> Checkpoint:
  """Reads either published format (see the module docstring) without torch and without code execution.

  Raises:
    ValueError / torch_pickle.UnsafePickleError: an unknown format, a pickle that asks for anything
      but tensors and containers, or contents that are not a score_sde checkpoint.
  """
  fmt = detect_format(path)
  if fmt == "score_sde_pytorch":
    obj = torch_pickle.load_pth(path)
    if not isinstance(obj, dict) or "model" not in obj:
      raise ValueError(f"{path} holds no 'model' state dict: not a score_sde_pytorch checkpoint "
                       f"(keys {sorted(obj) if isinstance(obj, dict) else type(obj).__name__})")
    model = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v) for k, v in obj["model"].items()}
    ema = None
    shadow = (obj.get("ema") or {}).get("shadow_params")
    if shadow is not None:
      names = _trainable_names(model)
      if len(names) != len(shadow):
        raise ValueError(f"{path}: the EMA holds {len(shadow)} tensors, the model {len(names)} trainable ones")
      ema = dict(model)
      for name, value in zip(names, shadow):
        if np.shape(value) != model[name].shape:
          raise ValueError(f"{path}: EMA tensor for {name} has shape {np.shape(value)}, the model {model[name].shape}")
        ema[name] = np.asarray(value)
    step = obj.get("step", 0)
    return Checkpoint(fmt, int(np.asarray(step)), model, ema)
  with open(path, "rb") as f:
    state = flax.serialization.msgpack_restore(f.read())
  if not isinstance(state, dict) or "optimizer" not in state or "params_ema" not in state:
    raise ValueError(f"{path} is a msgpack file but not a score_sde State (keys {sorted(state) if isinstance(state, dict) else '?'})")
  return Checkpoint(fmt, int(np.asarray(state.get("step", 0))), state["optimizer"]["target"], state["params_ema"])


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
