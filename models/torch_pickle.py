"""Reading PyTorch ``.pth`` files without torch, without running code, and within bounds.

A ``torch.save`` file (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` is a pickle whose tensors
refer, through persistent ids ``('storage', storage_type, key, location, numel)``, to raw storages
stored as ``<name>/data/<key>``; a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)``, a strided view of its storage (format: torch/serialization.py ``_save`` / ``_load``,
torch/_utils.py). The pickle is read by ``models.safe_pickle`` (data opcodes only, globals from an
allow-list of immutable stand-ins). Everything the file states is checked before it is used:
  * zip: no duplicate member names; each storage member's declared size equals numel x itemsize, and a
    compressed member cannot inflate beyond it (checked before reading); ``data.pkl`` at most
    ``MAX_PICKLE_BYTES``; at most ``MAX_STORAGE_BYTES`` of storage per file;
  * storages: one read per key, shared by every tensor that views it (never copied per tensor), with
    one element type and size per key;
  * tensors: a non-negative integer offset, sizes and strides; the last element inside the storage;
    at most ``MAX_ELEMENTS`` tensor elements per file. Tensors come back as read-only numpy views.
Every failure raises ``CheckpointError`` whose message starts with the path.
"""

from __future__ import annotations

import collections
import math
import os
import stat
import struct
import zipfile
import zlib

import ml_dtypes
import numpy as np

from models import safe_pickle
from models.errors import CheckpointError, UnsafePickleError

MAX_PICKLE_BYTES = 64 << 20        # data.pkl of a CIFAR-10 NCSN++ deep checkpoint: ~0.3 MiB
MAX_STORAGE_BYTES = 8 << 30        # the largest published score_sde checkpoint holds ~1.7 GiB
MAX_ELEMENTS = 1 << 31             # tensor elements per file (views counted): 4 x the largest checkpoint's
MAX_INFLATION = 1100               # deflate cannot exceed ~1032:1 (RFC 1951); a bigger claim is a lie

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
           "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
           "bool": np.bool_}


class _Global(tuple):
  """An allow-listed global: an immutable (kind, name) pair; kind "storage" carries its dtype name."""

  __slots__ = ()


_REBUILD_TENSOR = _Global(("call", "rebuild_tensor"))
_REBUILD_PARAMETER = _Global(("call", "rebuild_parameter"))
_ORDERED_DICT = _Global(("call", "OrderedDict"))
_ALLOWED = {
    ("collections", "OrderedDict"): _ORDERED_DICT,
    ("torch._utils", "_rebuild_tensor"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAMETER,
    **{("torch", name): _Global(("storage", np.dtype(dtype).name)) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): _Global(("dtype", np.dtype(dtype).name)) for name, dtype in _DTYPES.items()},
}
_NP_DTYPES = {np.dtype(d).name: np.dtype(d) for d in _STORAGE_DTYPES.values()}


def _count(value, what: str) -> int:
  """``value`` as a non-negative int (not a bool), or a format error naming ``what``."""
  if type(value) is not int or value < 0:
    raise safe_pickle.PickleFormatError(f"{what} must be a non-negative integer, got {type(value).__name__} "
                                        f"{value if type(value) in (int, float) else ''}".rstrip())
  return value


class _TorchZip:
  """The storages and tensors of one ``torch.save`` archive, with their budgets."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
    self.storages: dict[str, np.ndarray] = {}
    self.storage_bytes = 0
    self.elements = 0

  def member(self, name: str, expected: int) -> bytes:
    """The bytes of member ``name``, which must declare exactly ``expected`` bytes (checked first)."""
    try:
      info = self.archive.getinfo(name)
    except KeyError:
      raise safe_pickle.PickleFormatError(f"the archive has no member {name!r}") from None
    if info.file_size != expected:
      raise safe_pickle.PickleFormatError(f"member {name!r} declares {info.file_size} bytes, {expected} expected")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * info.compress_size + 1024:
      raise safe_pickle.PickleFormatError(f"member {name!r} claims to inflate {info.compress_size} bytes to "
                                          f"{info.file_size} (a zip bomb)")
    with self.archive.open(info) as f:
      data = f.read(expected + 1)               # zipfile stops at the declared size and checks the CRC
    if len(data) != expected:
      raise safe_pickle.PickleFormatError(f"member {name!r} holds {len(data)} bytes, {expected} declared")
    return data

  def persistent_load(self, pid):
    if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafePickleError("a persistent id that is not a torch storage reference")
    _, storage_type, key, _, numel = pid
    if not (isinstance(storage_type, _Global) and storage_type[0] == "storage"):
      raise safe_pickle.PickleFormatError("a storage reference without a torch storage type")
    if type(key) is not str or not 0 < len(key) <= 64:
      raise safe_pickle.PickleFormatError("a storage key that is not a short string")
    dtype, numel = _NP_DTYPES[storage_type[1]], _count(numel, f"storage {key}'s numel")
    if key in self.storages:
      known = self.storages[key]
      if known.dtype != dtype or known.size != numel:
        raise safe_pickle.PickleFormatError(f"storage {key} is referenced as {known.size} x {known.dtype} and as "
                                            f"{numel} x {dtype}")
      return known
    nbytes = numel * dtype.itemsize
    if self.storage_bytes + nbytes > MAX_STORAGE_BYTES:
      raise safe_pickle.PickleFormatError(f"storages above {MAX_STORAGE_BYTES} bytes (models.torch_pickle."
                                          "MAX_STORAGE_BYTES)")
    raw = self.member(f"{self.prefix}data/{key}", nbytes)
    self.storage_bytes += nbytes
    order = ">" if self.byteorder == "big" else "<"
    array = np.frombuffer(raw, dtype=dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    array = array.astype(dtype, copy=False)         # a copy only when the byte order differs
    array.flags.writeable = False
    self.storages[key] = array
    return array

  def rebuild_tensor(self, storage, offset, size, stride, *rest):
    """torch._utils._rebuild_tensor(_v2): a read-only strided view of a storage of this file."""
    if not any(storage is s for s in self.storages.values()):
      raise safe_pickle.PickleFormatError("a tensor whose storage is not a storage of this file")
    if not (type(size) is tuple and type(stride) is tuple and len(size) == len(stride) <= 32):
      raise safe_pickle.PickleFormatError("a tensor's size and stride must be tuples of one length")
    offset = _count(offset, "a tensor's storage offset")
    size = tuple(_count(s, "a tensor size") for s in size)
    stride = tuple(_count(s, "a tensor stride") for s in stride)
    numel = math.prod(size)
    if numel:
      last = offset + sum((n - 1) * s for n, s in zip(size, stride))
      if last >= storage.size:
        raise safe_pickle.PickleFormatError(f"a tensor of size {size}, stride {stride} at offset {offset} reaches "
                                            f"element {last} of a storage of {storage.size}")
    elif offset > storage.size:
      raise safe_pickle.PickleFormatError(f"a tensor at offset {offset} of a storage of {storage.size}")
    self.elements += numel
    if self.elements > MAX_ELEMENTS:
      raise safe_pickle.PickleFormatError(f"tensors of more than {MAX_ELEMENTS} elements (models.torch_pickle."
                                          "MAX_ELEMENTS)")
    if not numel:
      return np.zeros(size, storage.dtype)
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)

  def reduce(self, func, args: tuple):
    if func is _REBUILD_TENSOR and len(args) >= 4:
      return self.rebuild_tensor(*args)
    if func is _REBUILD_PARAMETER and args and isinstance(args[0], np.ndarray):
      return args[0]
    if func is _ORDERED_DICT and args == ():
      return collections.OrderedDict()
    raise UnsafePickleError(f"refusing to call {func[1] if isinstance(func, _Global) else type(func).__name__} "
                            "with these arguments: only tensors and plain containers may be loaded")

  @staticmethod
  def build(obj, state) -> None:
    # torch.save pickles a state dict as OrderedDict + BUILD of {'_metadata': ...}; the metadata is dropped.
    if not isinstance(obj, collections.OrderedDict):
      raise UnsafePickleError(f"refusing BUILD on a {type(obj).__name__}: only a state dict's metadata is read")


def _regular_file(path: str) -> None:
  """FileNotFoundError when absent, CheckpointError for a FIFO, device or directory (never opened)."""
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise FileNotFoundError(f"no checkpoint file at {path}") from None
  if not stat.S_ISREG(mode):
    raise CheckpointError(f"{path}: not a regular file")


def is_torch_zip(path: str) -> bool:
  """True if ``path`` is a regular file, a zip archive, holding a ``data.pkl`` (the torch >= 1.6 format)."""
  _regular_file(path)
  try:
    with zipfile.ZipFile(path) as archive:
      return any(n.endswith("data.pkl") for n in archive.namelist())
  except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
    return False


# What a malformed file can make zipfile, zlib or struct raise while reading; all mean "bad file".
_READ_ERRORS = (safe_pickle.PickleFormatError, zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error,
                NotImplementedError, RuntimeError, UnicodeDecodeError, OverflowError, ValueError, KeyError)


def load_pth(path: str):
  """The object a ``torch.save`` zip file holds, with every tensor as a read-only numpy array.

  Returns:
    dicts / lists / tuples / scalars as pickled, tensors as numpy arrays sharing their storages.

  Raises:
    FileNotFoundError: no file at ``path``.
    UnsafePickleError: the pickle names a global or opcode outside the allow-list (nothing is imported).
    CheckpointError: anything else wrong with the file (not a torch zip, bounds, sizes, structure).
  """
  if not is_torch_zip(path):
    raise CheckpointError(f"{path} is not a torch zip checkpoint (torch.save of torch >= 1.6); re-save it with a "
                          "current torch, or pass a score_sde (flax msgpack) checkpoint")
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
      if len(set(names)) != len(names):
        raise safe_pickle.PickleFormatError("the archive holds two members of one name")
      pkl = [n for n in names if n.endswith("data.pkl")]
      if len(pkl) != 1:
        raise safe_pickle.PickleFormatError(f"expected one data.pkl in the archive, found {len(pkl)}")
      prefix = pkl[0][: -len("data.pkl")]
      byteorder = "little"
      if prefix + "byteorder" in names:
        info = archive.getinfo(prefix + "byteorder")
        byteorder = archive.read(info).decode("ascii").strip() if info.file_size <= 16 else "?"
        if byteorder not in ("little", "big"):
          raise safe_pickle.PickleFormatError("the byteorder member is neither 'little' nor 'big'")
      reader = _TorchZip(archive, prefix, byteorder)
      size = archive.getinfo(pkl[0]).file_size
      if size > MAX_PICKLE_BYTES:
        raise safe_pickle.PickleFormatError(f"data.pkl of {size} bytes (at most {MAX_PICKLE_BYTES})")
      data = reader.member(pkl[0], size)
      return safe_pickle.load(data, allowed=_ALLOWED, persistent_load=reader.persistent_load, reduce=reader.reduce,
                              build=reader.build, leaf_types=(np.ndarray, _Global))
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{path}: {e}") from None
  except RecursionError:
    raise CheckpointError(f"{path}: nested too deeply to read") from None
  except _READ_ERRORS as e:
    raise CheckpointError(f"{path}: malformed torch checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
  text = (str(e).splitlines() or [""])[0][:200]
  return text if isinstance(e, safe_pickle.PickleFormatError) else f"{type(e).__name__}: {text}".rstrip(": ")
