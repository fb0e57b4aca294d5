"""Reading PyTorch ``.pth`` files without torch, without running code, and within bounds.

A ``torch.save`` file (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` is a pickle whose tensors
refer, through persistent ids ``('storage', storage_type, key, location, numel)``, to raw storages
stored as ``<name>/data/<key>``; a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)``, a strided view of its storage (format: torch/serialization.py ``_save`` / ``_load``,
torch/_utils.py). The pickle is read by ``safeio.safe_pickle`` (data opcodes only, globals from an
allow-list of immutable stand-ins). Everything the file states is checked before it is used:
  * zip: no duplicate member names; each storage member's declared size equals numel x itemsize, and a
    compressed member cannot inflate beyond it (checked before reading); ``data.pkl`` at most
    ``MAX_PICKLE_BYTES``; at most ``MAX_STORAGE_BYTES`` of storage per file;
  * storages: one read per key, shared by every tensor that views it (never copied per tensor), with
    one element type and size per key;
  * tensors: a non-negative integer offset, sizes and strides; the last element inside the storage;
    at most ``MAX_ELEMENTS`` tensor elements per file. Tensors come back as read-only numpy views.
Older files (torch < 1.6, or ``_use_new_zipfile_serialization=False``, e.g. pytorch-fid's Inception
weights) are a stream of pickles followed by the raw storages: ``_TorchLegacy`` reads them the same way.
Every failure raises ``CheckpointError`` whose message starts with the path.
"""

from __future__ import annotations

import collections
import math
import struct
import zipfile
import zlib

import ml_dtypes
import numpy as np

from safeio import safe_pickle
from safeio.untrusted import CheckpointError, UnsafePickleError, check_regular_file, read_bounded

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


class _Tensors:
  """Storages and tensor views of one file, with the file's budgets; subclasses say where storages live."""

  def __init__(self, byteorder: str):
    self.byteorder = byteorder
    self.storages: dict = {}                  # key -> read-only array (a root storage or a legacy view)
    self.ids: set[int] = set()                # id() of every storage handed to the pickle
    self.storage_bytes = 0
    self.elements = 0

  def reserve(self, nbytes: int) -> None:
    if self.storage_bytes + nbytes > MAX_STORAGE_BYTES:
      raise safe_pickle.PickleFormatError(f"storages above {MAX_STORAGE_BYTES} bytes (safeio.torch_pickle."
                                          "MAX_STORAGE_BYTES)")
    self.storage_bytes += nbytes

  def remember(self, key: str, array: np.ndarray) -> np.ndarray:
    self.storages[key] = array
    self.ids.add(id(array))
    return array

  def known(self, key, dtype, numel: int):
    """The storage already read under ``key`` (checked to be the same type and size), or None."""
    if type(key) is not str or not 0 < len(key) <= 64:
      raise safe_pickle.PickleFormatError("a storage key that is not a short string")
    known = self.storages.get(key)
    if known is not None and (known.dtype != dtype or known.size != numel):
      raise safe_pickle.PickleFormatError(f"storage {key} is referenced as {known.size} x {known.dtype} and as "
                                          f"{numel} x {dtype}")
    return known

  @staticmethod
  def storage_dtype(storage_type) -> np.dtype:
    if not (isinstance(storage_type, _Global) and storage_type[0] == "storage"):
      raise safe_pickle.PickleFormatError("a storage reference without a torch storage type")
    return _NP_DTYPES[storage_type[1]]

  def rebuild_tensor(self, storage, offset, size, stride, *rest):
    """torch._utils._rebuild_tensor(_v2): a read-only strided view of a storage of this file."""
    if id(storage) not in self.ids:
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
      raise safe_pickle.PickleFormatError(f"tensors of more than {MAX_ELEMENTS} elements (safeio.torch_pickle."
                                          "MAX_ELEMENTS)")
    if not numel:
      empty = np.zeros(size, storage.dtype)
      empty.flags.writeable = False
      return empty
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

  def load(self, data: bytes, start: int = 0):
    return safe_pickle.load(data, allowed=_ALLOWED, persistent_load=self.persistent_load, reduce=self.reduce,
                            build=self.build, leaf_types=(np.ndarray, _Global), start=start)

  def decode(self, raw: bytes, dtype: np.dtype) -> np.ndarray:
    order = ">" if self.byteorder == "big" else "<"
    array = np.frombuffer(raw, dtype=dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    return array.astype(dtype, copy=False)          # a copy only when the byte order differs


class _TorchZip(_Tensors):
  """torch >= 1.6: storages are zip members ``<prefix>data/<key>``, read when first referenced."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(byteorder)
    self.archive, self.prefix = archive, prefix

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
    # ('storage', storage_type, key, location, numel): torch/serialization.py, _save's persistent_id.
    if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafePickleError("a persistent id that is not a torch storage reference")
    _, storage_type, key, _, numel = pid
    dtype, numel = self.storage_dtype(storage_type), _count(numel, "a storage's numel")
    known = self.known(key, dtype, numel)
    if known is not None:
      return known
    self.reserve(numel * dtype.itemsize)
    array = self.decode(self.member(f"{self.prefix}data/{key}", numel * dtype.itemsize), dtype)
    array.flags.writeable = False
    return self.remember(key, array)


class _TorchLegacy(_Tensors):
  """torch < 1.6 (and ``_use_new_zipfile_serialization=False``): four pickles in a row (magic number,
  protocol 1001, system info, the object), the list of storage keys, then each storage as an int64
  element count and its raw bytes, in that order (torch/serialization.py ``_legacy_load``). Storages are
  allocated (zeroed) when the pickle names them and filled afterwards; their total may not exceed the
  bytes left in the file."""

  def __init__(self, data: bytes, byteorder: str):
    super().__init__(byteorder)
    self.data = data
    self.roots: list[str] = []
    self.writable: dict[str, np.ndarray] = {}

  def persistent_load(self, pid):
    # ('storage', storage_type, root_key, location, numel, view_metadata), view_metadata None or
    # (view_key, offset, view_numel).
    if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage"):
      raise UnsafePickleError("a persistent id that is not a torch storage reference")
    _, storage_type, key, _, numel, view = pid
    dtype, numel = self.storage_dtype(storage_type), _count(numel, "a storage's numel")
    root = self.known(key, dtype, numel)
    if root is None:
      self.reserve(numel * dtype.itemsize)
      if self.storage_bytes > len(self.data):
        raise safe_pickle.PickleFormatError(f"storages of {self.storage_bytes} bytes in a file of {len(self.data)}")
      self.writable[key] = np.zeros(numel, dtype)
      root = self.writable[key].view()
      root.flags.writeable = False
      self.roots.append(key)
      self.remember(key, root)
    if view is None:
      return root
    if not (type(view) is tuple and len(view) == 3):
      raise safe_pickle.PickleFormatError("a storage view that is not (key, offset, size)")
    view_key, offset, size = view
    offset, size = _count(offset, "a storage view's offset"), _count(size, "a storage view's size")
    if offset + size > root.size:
      raise safe_pickle.PickleFormatError(f"a storage view [{offset}, {offset + size}) of a storage of {root.size}")
    known = self.known(view_key, dtype, size)
    return known if known is not None else self.remember(view_key, root[offset:offset + size])

  def read(self) -> object:
    magic, pos = safe_pickle.load(self.data, allowed={}, persistent_load=_no_pid, reduce=_no_call, build=_no_call)
    if magic != _LEGACY_MAGIC:
      raise safe_pickle.PickleFormatError("not a torch file (no torch magic number)")
    protocol, pos = safe_pickle.load(self.data, allowed={}, persistent_load=_no_pid, reduce=_no_call,
                                     build=_no_call, start=pos)
    info, pos = safe_pickle.load(self.data, allowed={}, persistent_load=_no_pid, reduce=_no_call, build=_no_call,
                                 start=pos)
    if protocol != _LEGACY_PROTOCOL or not isinstance(info, dict):
      raise safe_pickle.PickleFormatError(f"legacy torch protocol {protocol!r} ({_LEGACY_PROTOCOL} is read)")
    self.byteorder = "little" if info.get("little_endian", True) is True else "big"
    result, pos = self.load(self.data, pos)
    keys, pos = safe_pickle.load(self.data, allowed={}, persistent_load=_no_pid, reduce=_no_call, build=_no_call,
                                 start=pos)
    if not isinstance(keys, list) or sorted(keys) != sorted(self.roots) or len(set(keys)) != len(keys):
      raise safe_pickle.PickleFormatError("the storage key list does not match the storages the pickle uses")
    for key in keys:
      target = self.writable.pop(key)
      (numel,) = struct.unpack("<q", self.data[pos:pos + 8])
      nbytes = target.size * target.itemsize
      if numel != target.size or pos + 8 + nbytes > len(self.data):
        raise safe_pickle.PickleFormatError(f"storage {key} holds {numel} elements in the file, {target.size} "
                                            "declared (or the file ends early)")
      target[...] = self.decode(self.data[pos + 8:pos + 8 + nbytes], target.dtype)
      pos += 8 + nbytes
    return result


_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001    # torch/serialization.py


def _no_pid(pid):
  raise UnsafePickleError("a persistent id outside the object pickle")


def _no_call(*args):
  raise UnsafePickleError("a call or BUILD in a header pickle")


def torch_format(path: str) -> str | None:
  """"zip" (torch >= 1.6: a zip archive holding a ``data.pkl``), "legacy" (a pickle stream opening with
  torch's magic number) or None, from the contents of the regular file ``path``."""
  check_regular_file(path)
  with open(path, "rb") as f:
    head = f.read(len(_LEGACY_HEAD))
  if head == _LEGACY_HEAD:
    return "legacy"
  try:
    with zipfile.ZipFile(path) as archive:
      return "zip" if any(n.endswith("data.pkl") for n in archive.namelist()) else None
  except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
    return None


# PROTO 2, LONG1 of 10 bytes: the magic number, as torch's legacy format writes it first.
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")

# What a malformed file can make zipfile, zlib or struct raise while reading; all mean "bad file".
_READ_ERRORS = (safe_pickle.PickleFormatError, zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error,
                NotImplementedError, RuntimeError, UnicodeDecodeError, OverflowError, ValueError, KeyError)


def load_pth(path: str):
  """The object a ``torch.save`` file holds (zip or legacy format), every tensor a read-only numpy array.

  Returns:
    dicts / lists / tuples / scalars as pickled, tensors as numpy arrays sharing their storages.

  Raises:
    FileNotFoundError: no file at ``path``.
    UnsafePickleError: the pickle names a global or opcode outside the allow-list (nothing is imported).
    CheckpointError: anything else wrong with the file (not a torch file, bounds, sizes, structure).
  """
  kind = torch_format(path)
  if kind is None:
    raise CheckpointError(f"{path} is not a torch.save file (neither its zip format nor the legacy one)")
  try:
    if kind == "legacy":
      return _TorchLegacy(read_bounded(path, MAX_STORAGE_BYTES + MAX_PICKLE_BYTES), "little").read()
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
      return reader.load(reader.member(pkl[0], size))[0]
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{path}: {e}") from None
  except RecursionError:
    raise CheckpointError(f"{path}: nested too deeply to read") from None
  except _READ_ERRORS as e:
    raise CheckpointError(f"{path}: malformed torch checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
  text = (str(e).splitlines() or [""])[0][:200]
  return text if isinstance(e, safe_pickle.PickleFormatError) else f"{type(e).__name__}: {text}".rstrip(": ")
