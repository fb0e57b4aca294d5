"""Reading PyTorch ``.pth`` files without torch and without running code from them.

A ``torch.save`` file (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` is a pickle whose tensors
refer, through persistent ids, to raw storages stored as ``<name>/data/<key>``. A plain unpickler
would import and call whatever globals the pickle names (``os.system`` included). Here
``find_class`` admits only the few globals a checkpoint of tensors and plain containers needs
(``collections.OrderedDict``, torch's tensor-rebuild functions, storage types and dtypes), each
replaced by a numpy stand-in; any other global stops the load with ``UnsafePickleError`` before it
is imported. Tensors come back as numpy arrays. (Format: torch/serialization.py ``_save`` and
``_load``, torch/_utils.py ``_rebuild_tensor_v2``.)
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
  """The pickle asks for a global outside the allow-list (it could run code)."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
           "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
           "bool": np.bool_}


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` and friends: only its element type matters."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused):
  """torch._utils._rebuild_tensor(_v2): a strided view of the storage, copied into a fresh array."""
  size, stride = tuple(size), tuple(stride)
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): np.dtype(dtype) for name, dtype in _DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self._archive, self._prefix, self._order = archive, prefix, "<" if byteorder == "little" else ">"
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"refusing the global '{module}.{name}': a checkpoint may only hold tensors and plain containers "
          f"(allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED if not n.endswith('Storage'))} and torch storage "
          "types)") from None

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel): torch/serialization.py, _save's persistent_id.
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafePickleError(f"unexpected persistent id {pid!r} (expected a torch storage reference)")
    _, storage_type, key, _, numel = pid
    dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.dtype(storage_type)
    if key not in self._storages:
      raw = self._archive.read(f"{self._prefix}data/{key}")
      array = np.frombuffer(raw, dtype=dtype.newbyteorder(self._order) if dtype.itemsize > 1 else dtype)
      if array.size != numel:
        raise pickle.UnpicklingError(f"storage {key} holds {array.size} elements, the pickle expects {numel}")
      self._storages[key] = array.astype(dtype, copy=False)
    return self._storages[key]


def is_torch_zip(path: str) -> bool:
  """True if ``path`` is a zip archive holding a ``data.pkl`` (the torch >= 1.6 format)."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(n.endswith("data.pkl") for n in archive.namelist())


def load_pth(path: str):
  """The object a ``torch.save`` zip file holds, with every tensor as a numpy array.

  Raises:
    UnsafePickleError: the pickle names a global that is not a tensor rebuild, storage type, dtype
      or ``OrderedDict`` (nothing from the file is imported or called).
    ValueError: not a torch zip file (e.g. torch's pre-1.6 format).
  """
  if not is_torch_zip(path):
    raise ValueError(f"{path} is not a torch zip checkpoint (torch.save of torch >= 1.6); re-save it with a current "
                     "torch, or pass a score_sde (flax msgpack) checkpoint")
  with zipfile.ZipFile(path) as archive:
    pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise ValueError(f"{path}: expected one data.pkl in the archive, found {pkl}")
    prefix = pkl[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
    with archive.open(pkl[0]) as f:
      return _Unpickler(f, archive, prefix, byteorder).load()
