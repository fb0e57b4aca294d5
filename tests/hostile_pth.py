"""torch's .pth archive, with every zip header field under control, and the trusted fixture reader (no
project imports).

* ``zip_bytes`` writes a zip archive from ``Member``s (declared sizes, CRC, flags, method, duplicate
  names can all lie); ``write_pth`` lays out torch's archive (``<prefix>/data.pkl``,
  ``<prefix>/data/<key>``, ``<prefix>/byteorder``, ``<prefix>/version``);
* ``read_fixture``: a trusted reader of the committed valid .pth fixtures (it only ever sees those
  files) giving the tree to rebuild them from (``Fixture.write``, ``replace``) and the expected tensor
  table (``fixture_table``, ``digest``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import pickle
import struct
import zipfile
import zlib

import numpy as np

from tests.hostile_pickle import STORAGE_DTYPE, STORAGE_ITEMSIZE, ODict, Tensor, pickle_bytes


# -------------------------------------------------------------------------------------------- zip writer
@dataclasses.dataclass
class Member:
  """One zip member; every header field can lie."""
  name: str
  data: bytes = b""
  method: int = zipfile.ZIP_STORED
  payload: bytes | None = None        # the stored bytes; default: data (stored) or its raw deflate
  crc: int | None = None              # default: crc32(data)
  size: int | None = None             # declared uncompressed size; default: len(data)
  flags: int = 0
  central_name: str | None = None     # name in the central directory, if it differs from the local header's


def deflate(data: bytes) -> bytes:
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  return c.compress(data) + c.flush()


def deflated_zeros(n: int, chunk: int = 1 << 24) -> tuple[bytes, int]:
  """(raw deflate stream, crc32) of n zero bytes, built from identical fully flushed blocks (fast)."""
  assert n % chunk == 0
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  zeros = bytes(chunk)
  block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
  crc = 0
  for _ in range(n // chunk):
    crc = zlib.crc32(zeros, crc)
  return block * (n // chunk) + c.flush(), crc


def zip_bytes(members: list[Member]) -> bytes:
  out, central = bytearray(), bytearray()
  for m in members:
    payload = m.payload if m.payload is not None else (deflate(m.data) if m.method == zipfile.ZIP_DEFLATED else m.data)
    crc = m.crc if m.crc is not None else zlib.crc32(m.data)
    size = m.size if m.size is not None else len(m.data)
    name, cname = m.name.encode(), (m.central_name if m.central_name is not None else m.name).encode()
    offset = len(out)
    out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, m.flags, m.method, 0, 0x21, crc, len(payload), size,
                       len(name), 0) + name + payload
    central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, m.flags, m.method, 0, 0x21, crc, len(payload), size,
                           len(cname), 0, 0, 0, 0, 0, offset) + cname
  start = len(out)
  out += central
  out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), start, 0)
  return bytes(out)


def _storage_bytes(value) -> bytes:
  return value.tobytes() if isinstance(value, np.ndarray) else bytes(value)


def torch_members(obj, storages: dict, *, prefix: str = "archive", byteorder: str | None = "little",
                  pkl: bytes | None = None, method: int = zipfile.ZIP_STORED) -> list[Member]:
  """torch.save's archive members for ``obj`` (a tree for ``pickle_bytes``) and ``storages``
  (key -> (storage type name, ndarray or bytes)); ``pkl`` replaces the pickle."""
  numels = {k: len(_storage_bytes(v)) // STORAGE_ITEMSIZE.get(t, 1) for k, (t, v) in storages.items()}
  kinds = {k: t for k, (t, _) in storages.items()}
  members = [Member(f"{prefix}/data.pkl", pkl if pkl is not None else pickle_bytes(obj, numels=numels, kinds=kinds),
                    method)]
  if byteorder is not None:
    members.append(Member(f"{prefix}/byteorder", byteorder.encode()))
  members += [Member(f"{prefix}/data/{k}", _storage_bytes(v), method) for k, (t, v) in storages.items()]
  members.append(Member(f"{prefix}/version", b"3\n"))
  return members


def write(path, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def write_pth(path, obj, storages: dict, **kwargs) -> str:
  return write(path, zip_bytes(torch_members(obj, storages, **kwargs)))


# ------------------------------------------------------------------------------- trusted fixture reader
class _OD(collections.OrderedDict):
  pass


@dataclasses.dataclass
class _StorageName:
  name: str


@dataclasses.dataclass
class _StorageRef:
  key: str
  storage: str
  numel: int


class _FixtureUnpickler(pickle.Unpickler):
  """Only for the committed fixtures: tensors come back as ``Tensor`` specs, OrderedDicts as ``_OD``."""

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return _OD
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return lambda s, offset, size, stride, requires_grad, hooks, *rest: Tensor(
          s.key, offset, tuple(size), tuple(stride), s.storage, s.numel, requires_grad)
    if module == "torch" and name in STORAGE_ITEMSIZE:
      return _StorageName(name)
    raise pickle.UnpicklingError(f"fixture holds {module}.{name}")

  def persistent_load(self, pid):
    _, storage, key, _, numel = pid
    return _StorageRef(key, storage.name, numel)


def _to_tree(v):
  if isinstance(v, _OD):
    meta = v.__dict__.get("_metadata")
    return ODict([(k, _to_tree(x)) for k, x in v.items()], _to_tree(meta) if meta is not None else None)
  if isinstance(v, dict):
    return {k: _to_tree(x) for k, x in v.items()}
  if isinstance(v, list):
    return [_to_tree(x) for x in v]
  if isinstance(v, tuple):
    return tuple(_to_tree(x) for x in v)
  return v


@dataclasses.dataclass
class Fixture:
  path: str
  prefix: str
  tree: dict                          # the checkpoint as a tree of plain values, ODict and Tensor nodes
  storages: dict                      # key -> (storage type name, bytes)
  byteorder: str
  pkl: bytes
  members: list                       # (name, bytes) of every member in archive order

  def array(self, t: Tensor) -> np.ndarray:
    kind, data = self.storages[t.key]
    order = "<" if self.byteorder == "little" else ">"
    storage = np.frombuffer(data, np.dtype(STORAGE_DTYPE[kind]).newbyteorder(order))
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[t.offset:], shape=t.size, strides=[s * item for s in t.stride])
    return np.ascontiguousarray(view).astype(STORAGE_DTYPE[kind])

  def members_with(self, pkl: bytes) -> list[Member]:
    return [Member(n, pkl if n == f"{self.prefix}data.pkl" else d) for n, d in self.members]

  def write(self, path, tree=None, **kwargs) -> str:
    """This fixture rebuilt by ``write_pth`` (from ``tree`` if given: the hostile variants)."""
    storages = {k: (t, d) for k, (t, d) in self.storages.items()}
    return write_pth(path, self.tree if tree is None else tree, storages, prefix=self.prefix.rstrip("/"),
                     byteorder=self.byteorder, **kwargs)


def read_fixture(path) -> Fixture:
  with zipfile.ZipFile(path) as z:
    members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
  names = dict(members)
  pkl_name = next(n for n in names if n.endswith("data.pkl"))
  prefix = pkl_name[: -len("data.pkl")]
  tree = _to_tree(_FixtureUnpickler(io.BytesIO(names[pkl_name])).load())
  byteorder = names.get(prefix + "byteorder", b"little").decode()
  storages = {}

  def collect(v):
    if isinstance(v, Tensor):
      storages[v.key] = (v.storage, names[f"{prefix}data/{v.key}"])
    elif isinstance(v, ODict):
      for _, x in v.items:
        collect(x)
    elif isinstance(v, dict):
      for x in v.values():
        collect(x)
    elif isinstance(v, (list, tuple)):
      for x in v:
        collect(x)
  collect(tree)
  return Fixture(str(path), prefix, tree, storages, byteorder, names[pkl_name], members)


def digest(a) -> list:
  """[shape, dtype name, sha256 of the little-endian C-order bytes] of an array (a type name otherwise)."""
  if not isinstance(a, np.ndarray):
    return [type(a).__name__]
  if a.nbytes > 64 << 20:
    return [list(a.shape), a.dtype.name, "large"]
  data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
  return [list(a.shape), a.dtype.name, hashlib.sha256(data).hexdigest()]


def fixture_table(fx: Fixture) -> dict:
  """The expected raw table of a .pth fixture: 'model' names -> digests, EMA shadow digests, step."""
  model = dict(fx.tree["model"].items)
  return {"model": {k: digest(fx.array(v)) for k, v in model.items()},
          "shadow": [digest(fx.array(v)) for v in fx.tree["ema"]["shadow_params"]], "step": repr(fx.tree["step"])}


def replace(node, path: tuple, value):
  """A copy of the tree ``node`` with the item at ``path`` (keys / ODict names / list indices) replaced."""
  if not path:
    return value
  head, rest = path[0], path[1:]
  if isinstance(node, ODict):
    items = [(k, replace(v, rest, value) if k == head else v) for k, v in node.items]
    if head not in [k for k, _ in node.items]:
      items.append((head, replace(None, rest, value)))
    return ODict(items, node.metadata)
  if isinstance(node, dict):
    out = dict(node)
    out[head] = replace(node.get(head), rest, value)
    return out
  if isinstance(node, list):
    out = list(node)
    out[head] = replace(node[head], rest, value)
    return out
  raise TypeError(f"cannot descend into {type(node).__name__} at {head!r}")
