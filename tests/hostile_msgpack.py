"""score_sde's flax msgpack State: ``ndarray_ext`` / ``msgpack_bytes`` write one, ``read_msgpack_fixture``
reads the committed valid fixture (a trusted file) and ``msgpack_table`` gives its expected table
(no project imports)."""

from __future__ import annotations

import numpy as np

from tests.hostile_pth import digest


def ndarray_ext(a=None, *, shape=None, dtype=None, buffer=None, code: int = 1):
  """flax's ndarray msgpack extension: ExtType(1, packb((shape, dtype name, C bytes)))."""
  import msgpack

  if a is not None:
    a = np.asarray(a)
    shape = list(a.shape) if shape is None else shape
    dtype = a.dtype.name if dtype is None else dtype
    buffer = a.tobytes("C") if buffer is None else buffer
  return msgpack.ExtType(code, msgpack.packb([shape, dtype, buffer], use_bin_type=True))


def _to_msgpack_tree(tree):
  if isinstance(tree, dict):
    return {k: _to_msgpack_tree(v) for k, v in tree.items()}
  if isinstance(tree, np.ndarray):
    return ndarray_ext(tree)
  return tree


def msgpack_bytes(tree) -> bytes:
  import msgpack

  return msgpack.packb(_to_msgpack_tree(tree), use_bin_type=True)


def read_msgpack_fixture(path) -> dict:
  """The committed flax State (trusted file), arrays decoded here rather than by flax."""
  with open(path, "rb") as f:
    return read_msgpack_fixture_bytes(f.read())


def read_msgpack_fixture_bytes(data: bytes) -> dict:
  import msgpack

  def ext(code, payload):
    assert code == 1, code
    shape, dtype, buffer = msgpack.unpackb(payload, raw=False)
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)

  return msgpack.unpackb(data, ext_hook=ext, raw=False, strict_map_key=False)


def flatten(tree, prefix="") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def msgpack_table(state: dict) -> dict:
  return {"step": int(np.asarray(state["step"])),
          "params": {k: digest(v) for k, v in flatten(state["optimizer"]["target"]).items()},
          "ema": {k: digest(v) for k, v in flatten(state["params_ema"]).items()}}
