"""Reading flax msgpack checkpoints (``flax.serialization.msgpack_serialize``) from untrusted files.

The format (flax/serialization.py): a msgpack tree of maps, lists and scalars whose arrays are
extension type 1, itself msgpack ``[shape, dtype name, raw bytes]`` (type 3: the same for a numpy
scalar), and arrays above 2 GiB split into ``{'__msgpack_chunked_array__', 'chunks', 'shape'}`` maps.
``flax.serialization.msgpack_restore`` trusts the dtype name (``np.dtype`` of any string), recurses
without a bound and keeps unknown extension types; this reader takes numeric dtypes only, checks every
buffer against its shape, refuses other extension types and bounds the file size and the nesting
(msgpack itself refuses nesting beyond its stack). It returns what ``msgpack_restore`` returns for a
well-formed file: the same tree, the same arrays bit for bit.
"""

from __future__ import annotations

import math

import ml_dtypes
import msgpack
import numpy as np

from safeio.untrusted import CheckpointError, read_bounded

MAX_FILE_BYTES = 8 << 30
_DTYPES = {np.dtype(d).name: np.dtype(d) for d in (
    np.float16, np.float32, np.float64, ml_dtypes.bfloat16, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128)}
_NDARRAY, _COMPLEX, _NPSCALAR = 1, 2, 3
_CHUNKED = "__msgpack_chunked_array__"


class _Malformed(Exception):
  pass


def _array(data: bytes) -> np.ndarray:
  """Extension type 1 / 3: msgpack [shape, dtype name, buffer] -> a read-only array."""
  parts = msgpack.unpackb(data, raw=True, use_list=True)
  if not (isinstance(parts, list) and len(parts) == 3):
    raise _Malformed("an array record that is not [shape, dtype, bytes]")
  shape, name, buffer = parts
  if not (isinstance(shape, list) and len(shape) <= 32 and all(type(n) is int and n >= 0 for n in shape)):
    raise _Malformed("an array shape that is not a list of non-negative integers")
  dtype = _DTYPES.get(name.decode("ascii", "replace") if isinstance(name, bytes) else None)
  if dtype is None or not isinstance(buffer, bytes):
    raise _Malformed(f"an array of dtype {name!r} (numeric dtypes only: {sorted(_DTYPES)})")
  if len(buffer) != math.prod(shape) * dtype.itemsize:
    raise _Malformed(f"an array of shape {tuple(shape)} and dtype {dtype} with {len(buffer)} bytes")
  return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _ext(code: int, data: bytes):
  if code == _NDARRAY:
    return _array(data)
  if code == _NPSCALAR:
    return _array(data)[()]
  if code == _COMPLEX:
    pair = msgpack.unpackb(data)
    if not (isinstance(pair, list) and len(pair) == 2 and all(type(v) in (int, float) for v in pair)):
      raise _Malformed("a complex number that is not two reals")
    return complex(*pair)
  raise _Malformed(f"msgpack extension type {code} (flax writes 1, 2, 3)")


def _unchunk(tree):
  """flax's chunked arrays back into arrays, iteratively (msgpack bounds the depth to its stack)."""
  if isinstance(tree, dict) and _CHUNKED in tree:
    return _join(tree)
  todo = [tree]
  while todo:
    node = todo.pop()
    if isinstance(node, dict):
      for key, value in node.items():
        if isinstance(value, dict) and _CHUNKED in value:
          node[key] = _join(value)
        elif isinstance(value, dict):
          todo.append(value)
  return tree


def _join(record: dict) -> np.ndarray:
  chunks, shape = record.get("chunks"), record.get("shape")
  if not (isinstance(chunks, dict) and isinstance(shape, dict)):
    raise _Malformed("a chunked array without 'chunks' and 'shape'")
  parts = [chunks[str(i)] for i in range(len(chunks)) if str(i) in chunks]
  dims = [shape[str(i)] for i in range(len(shape)) if str(i) in shape]
  if (len(parts) != len(chunks) or not parts or len(dims) != len(shape)
      or not all(isinstance(p, np.ndarray) and p.ndim == 1 and p.dtype == parts[0].dtype for p in parts)
      or not all(type(n) is int and n >= 0 for n in dims) or sum(p.size for p in parts) != math.prod(dims)):
    raise _Malformed("a chunked array whose chunks do not fill its shape")
  return np.concatenate(parts).reshape(dims)


def load_msgpack(path: str):
  """The tree a flax msgpack file holds (dicts, lists, scalars, numpy arrays).

  Raises:
    FileNotFoundError: no file at ``path``.
    CheckpointError: anything wrong with the file, the message starting with ``path``.
  """
  data = read_bounded(path, MAX_FILE_BYTES)
  try:
    return _unchunk(msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=True))
  except (_Malformed, ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeDecodeError,
          msgpack.exceptions.UnpackException, RecursionError) as e:
    text = (str(e).splitlines() or [""])[0][:200]
    detail = text if isinstance(e, _Malformed) else f"{type(e).__name__}: {text}".rstrip(": ")
    raise CheckpointError(f"{path}: malformed flax msgpack checkpoint ({detail})") from None
