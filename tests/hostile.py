"""Hostile checkpoint files, built without torch, and the child process that feeds them to the readers.

Builders (no project imports, so a test can build files without loading the code under test):
  * ``Pickle`` emits pickle opcodes one by one; ``pickle_bytes`` turns a tree of Python values and
    nodes (``Global``, ``Reduce``, ``Build``, ``Pid``, ``ODict``, ``Tensor``, ``Raw``) into a pickle the
    way torch.save writes one (protocol 2, ``torch._utils._rebuild_tensor_v2``, persistent ids
    ``('storage', torch.FloatStorage, key, 'cpu', numel)``, OrderedDict + BUILD of ``_metadata``);
  * ``zip_bytes`` writes a zip archive with every header field under control (declared sizes, CRC,
    flags, method, duplicate names); ``write_pth`` lays out torch's archive (``<prefix>/data.pkl``,
    ``<prefix>/data/<key>``, ``<prefix>/byteorder``, ``<prefix>/version``);
  * ``ndarray_ext`` / ``msgpack_bytes`` write score_sde's flax msgpack State;
  * ``read_fixture`` / ``read_msgpack_fixture``: trusted readers of the committed valid fixtures (they
    only ever see those files) giving the tree to rebuild them from and the expected tensor tables;
  * ``CLASSES``: the hostile cases of each class of issue 22 item 6, written into a directory;
  * ``mutant``: the seeded fuzzer's mutation of a fixture's bytes (deterministic in its arguments).

Child: ``python -m tests.hostile SPEC.json`` imports the entry points, caps its address space at its
size after the imports plus ``limit_bytes``, and runs each task of the spec, printing a protocol line
when a task starts and a JSON result when it ends, so the parent names the task a crash or hang
happened in (see tests/test_hostile_files.py).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import pickletools
import random
import struct
import sys
import time
import zipfile
import zlib

import numpy as np

TAG = "@@hostile@@ "                    # prefix of the child's protocol lines on stdout

# ----------------------------------------------------------------------------------------- pickle writer
STORAGE_ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}
STORAGE_DTYPE = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                 "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
                 "ByteStorage": "uint8", "BoolStorage": "bool"}


class Pickle:
  """Opcode-level pickle writer: every method appends one opcode (and returns self)."""

  def __init__(self, proto: int | None = 2):
    self.out = bytearray()
    self.memo: dict = {}              # id(obj) or a Global's key -> memo index
    self.keep: list = []              # objects whose id is in memo stay alive
    self.numels: dict = {}            # storage key -> element count (Tensor's default numel)
    self.kinds: dict = {}             # storage key -> storage type name (Tensor's default storage)
    if proto is not None:
      self.raw(pickle.PROTO + bytes([proto]))

  def raw(self, b: bytes):
    self.out += b
    return self

  def getvalue(self) -> bytes:
    return bytes(self.out)

  def int(self, n: int):
    if 0 <= n < 256:
      return self.raw(pickle.BININT1 + bytes([n]))
    if 0 <= n < 65536:
      return self.raw(pickle.BININT2 + struct.pack("<H", n))
    if -2**31 <= n < 2**31:
      return self.raw(pickle.BININT + struct.pack("<i", n))
    data = pickle.encode_long(n)
    return self.raw(pickle.LONG1 + bytes([len(data)]) + data)

  def long4(self, length: int, data: bytes = b""):
    return self.raw(pickle.LONG4 + struct.pack("<i", length) + data)

  def str(self, s: str):
    data = s.encode("utf-8", "surrogatepass")
    return self.raw(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)

  def float(self, x: float):
    return self.raw(pickle.BINFLOAT + struct.pack(">d", x))

  def bool(self, b: bool):
    return self.raw(pickle.NEWTRUE if b else pickle.NEWFALSE)

  def none(self):
    return self.raw(pickle.NONE)

  def mark(self):
    return self.raw(pickle.MARK)

  def tuple(self, n: int | None = None):
    return self.raw({0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(n, pickle.TUPLE))

  def put(self, key=None) -> int:
    index = len(self.keep)
    self.keep.append(key)
    if key is not None:
      self.memo[key] = index
    self.raw(pickle.BINPUT + bytes([index]) if index < 256 else pickle.LONG_BINPUT + struct.pack("<I", index))
    return index

  def get(self, index: int):
    return self.raw(pickle.BINGET + bytes([index]) if index < 256 else pickle.LONG_BINGET + struct.pack("<I", index))

  def global_(self, module: str, name: str):
    return self.raw(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")

  def stack_global(self, module: str, name: str):
    return self.str(module).str(name).raw(pickle.STACK_GLOBAL)

  def op(self, name: str):
    """Any argument-less opcode by its pickle module name (REDUCE, BUILD, SETITEMS, APPENDS, STOP...)."""
    return self.raw(getattr(pickle, name))

  def stop(self):
    return self.raw(pickle.STOP)


@dataclasses.dataclass(eq=False)
class Global:
  module: str
  name: str
  stack: bool = False                 # STACK_GLOBAL (protocol 4) instead of GLOBAL


@dataclasses.dataclass(eq=False)
class Reduce:
  func: object
  args: object                        # normally a tuple


@dataclasses.dataclass(eq=False)
class Build:
  obj: object
  state: object


@dataclasses.dataclass(eq=False)
class Pid:
  value: object                       # BINPERSID of this value (PERSID with a text line if text=True)
  text: bool = False


@dataclasses.dataclass(eq=False)
class Raw:
  """Opcodes pushed as they are (they must leave one value on the stack), or a function that emits them
  into the live ``Pickle`` (so values inside share its memo instead of clobbering its indices)."""
  data: object


@dataclasses.dataclass(eq=False)
class ODict:
  """collections.OrderedDict() + SETITEMS (+ BUILD of {'_metadata': metadata}), as torch writes a state dict."""
  items: list
  metadata: object = None


@dataclasses.dataclass(eq=False)
class Tensor:
  """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict()).

  Every field is emitted as given, so hostile values (floats, strings, negative or huge ints) go through."""
  key: object
  offset: object = 0
  size: object = ()
  stride: object = ()
  storage: str | None = None          # None: the type the storage is written with (FloatStorage if unknown)
  numel: object = None                # declared in the persistent id; None: the storage's element count
  requires_grad: object = False
  func: str = "_rebuild_tensor_v2"
  location: object = "cpu"
  args: tuple | None = None           # replaces (offset, size, stride, requires_grad, hooks) when given

  @staticmethod
  def dense(key, shape, offset=0, storage=None, numel=None):
    shape = tuple(shape)
    stride = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
    return Tensor(key, offset, shape, stride, storage, numel)


def _tensor_node(p: Pickle, t: Tensor):
  numel = t.numel if t.numel is not None else p.numels.get(t.key, 0)
  kind = t.storage if t.storage is not None else p.kinds.get(t.key, "FloatStorage")
  pid = Pid(("storage", Global("torch", kind), t.key, t.location, numel))
  args = t.args if t.args is not None else (t.offset, t.size, t.stride, t.requires_grad, ODict([]))
  return Reduce(Global("torch._utils", t.func), (pid, *args))


def emit(p: Pickle, v) -> None:
  """Appends the opcodes that push ``v`` (memoising containers and globals like the pickler)."""
  if v is None:
    p.none()
  elif isinstance(v, bool):
    p.bool(v)
  elif isinstance(v, int):
    p.int(v)
  elif isinstance(v, float):
    p.float(v)
  elif isinstance(v, str):
    p.str(v)
  elif isinstance(v, bytes):
    head = pickle.SHORT_BINBYTES + bytes([len(v)]) if len(v) < 256 else pickle.BINBYTES + struct.pack("<I", len(v))
    p.raw(head + v)
  elif isinstance(v, Raw):
    p.raw(v.data) if isinstance(v.data, bytes) else v.data(p)
  elif isinstance(v, Global):
    key = ("global", v.module, v.name, v.stack)
    if key in p.memo:
      p.get(p.memo[key])
    else:
      (p.stack_global if v.stack else p.global_)(v.module, v.name)
      p.put(key)
  elif id(v) in p.memo:
    p.get(p.memo[id(v)])
  elif isinstance(v, tuple):
    if len(v) > 3:
      p.mark()
    for x in v:
      emit(p, x)
    p.tuple(len(v))
    p.put(id(v))
    p.keep[-1] = v
  elif isinstance(v, list):
    p.op("EMPTY_LIST")
    p.put(id(v))
    p.keep[-1] = v
    if v:
      p.mark()
      for x in v:
        emit(p, x)
      p.op("APPENDS")
  elif isinstance(v, dict):
    p.op("EMPTY_DICT")
    p.put(id(v))
    p.keep[-1] = v
    if v:
      p.mark()
      for k, x in v.items():
        emit(p, k)
        emit(p, x)
      p.op("SETITEMS")
  elif isinstance(v, Reduce):
    emit(p, v.func)
    emit(p, v.args)
    p.op("REDUCE")
    p.put(id(v))
    p.keep[-1] = v
  elif isinstance(v, Build):
    emit(p, v.obj)
    emit(p, v.state)
    p.op("BUILD")
  elif isinstance(v, Pid):
    if v.text:
      p.raw(pickle.PERSID + str(v.value).encode() + b"\n")
    else:
      emit(p, v.value)
      p.op("BINPERSID")
  elif isinstance(v, ODict):
    emit(p, Global("collections", "OrderedDict"))
    p.tuple(0).op("REDUCE")
    p.put(id(v))
    p.keep[-1] = v
    if v.items:
      p.mark()
      for k, x in v.items:
        emit(p, k)
        emit(p, x)
      p.op("SETITEMS")
    if v.metadata is not None:
      emit(p, {"_metadata": v.metadata})
      p.op("BUILD")
  elif isinstance(v, Tensor):
    node = _tensor_node(p, v)
    emit(p, node)
    p.memo[id(v)] = p.memo[id(node)]
    p.keep.append(v)
  else:
    raise TypeError(f"cannot emit {type(v).__name__}")


def pickle_bytes(obj, *, proto: int | None = 2, numels: dict | None = None, kinds: dict | None = None) -> bytes:
  p = Pickle(proto)
  p.numels, p.kinds = dict(numels or {}), dict(kinds or {})
  emit(p, obj)
  return p.stop().getvalue()


def nested_memo_list(levels: int = 31) -> list:
  """[L, L] where L = [L', L'] ... ``levels`` deep: a tiny pickle whose walk visits 2**levels leaves."""
  node: list = []
  for _ in range(levels):
    node = [node, node]
  return node


def nested_memo_dict(levels: int = 30) -> dict:
  node: dict = {}
  for _ in range(levels):
    node = {"a": node, "b": node}
  return node


def deep_list(depth: int) -> Raw:
  """A list nested ``depth`` deep: EMPTY_LIST x depth, then APPEND x (depth - 1)."""
  return Raw(pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1))


def deep_tuple(depth: int) -> Raw:
  """MARK x depth, then TUPLE x depth: ((((...)))) with depth levels."""
  return Raw(pickle.MARK * depth + pickle.TUPLE * depth)


def deep_dict(depth: int) -> Raw:
  """{'a': {'a': ... {} ...}}: (EMPTY_DICT 'a') x depth, EMPTY_DICT, then SETITEM x depth."""
  key = pickle.SHORT_BINUNICODE + b"\x01a"
  return Raw((pickle.EMPTY_DICT + key) * depth + pickle.EMPTY_DICT + pickle.SETITEM * depth)


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


# -------------------------------------------------------------------------------------------- msgpack
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


# ------------------------------------------------------------------------------------------------- cases
ERROR, OK, EITHER = "error", "ok", "either"
PTH_ENTRIES = ("load_pth", "read_checkpoint", "load_score_sde", "inception", "cli")
CKPT_ENTRIES = ("read_checkpoint", "load_score_sde", "cli")


@dataclasses.dataclass
class Case:
  id: str
  path: str
  expect: dict                        # entry -> ERROR | OK | EITHER
  check: str | None = None            # what an OK result must satisfy (see _check)
  config: str = "cifar10"             # which config the load_score_sde / cli entries use
  clean: list | None = None           # read these clean fixtures after the case (class 3)
  expected: dict | None = None        # the table an OK result must have (check 'expected' / 'state_dict')


def _expect(entries, default=ERROR, **overrides) -> dict:
  out = {e: default for e in entries}
  out.update(overrides)
  return out


@dataclasses.dataclass
class Context:
  dir: str                            # where the case files go
  fixture: Fixture                    # pytorch_r_ncsnpp_residual.pth
  msgpack_fixture: str                # jax_r_ncsnpp_residual_checkpoint_1
  markers: str                        # directory that code run by a hostile file would write into
  pwn_module: str                     # module whose import writes a marker

  def path(self, name):
    return os.path.join(self.dir, name)

  def touch(self, case_id):
    return f"touch {os.path.join(self.markers, case_id)}"


def _first_tensor(fx: Fixture, rank: int) -> tuple[str, Tensor]:
  return next((k, v) for k, v in fx.tree["model"].items if isinstance(v, Tensor) and len(v.size) == rank)


def out_of_bounds(ctx: Context) -> list[Case]:
  """Class 1: tensors whose offset / size / stride point outside their storage, or are not integers."""
  fx = ctx.fixture
  name, t = _first_tensor(fx, 4)                  # a conv weight
  numel = t.numel
  n1, t1 = _first_tensor(fx, 1)
  specs = {
      "negative_offset": dict(offset=-1, size=(4,), stride=(1,)),
      "negative_stride": dict(offset=0, size=(4,), stride=(-1,)),
      "negative_stride_in_bounds": dict(offset=3, size=(4,), stride=(-1,)),
      "huge_size": dict(offset=0, size=(2**40,), stride=(1,)),
      "last_element_past_end": dict(offset=0, size=(numel + 1,), stride=(1,)),
      "last_element_past_end_2d": dict(offset=0, size=(2, numel // 2 + 1), stride=(numel // 2 + 1, 1)),
      "offset_plus_size_past_end": dict(offset=numel - 3, size=(4,), stride=(1,)),
      "scalar_offset_at_end": dict(offset=numel, size=(), stride=()),
      "offset_huge_long": dict(offset=2**100, size=(1,), stride=(1,)),
      "stride_int64_overflow": dict(offset=0, size=(2, 2), stride=(2**62, 1)),
      "stride_bytes_wrap": dict(offset=0, size=(3,), stride=(2**61,)),
      "negative_size": dict(offset=0, size=(-1,), stride=(1,)),
      "too_many_dims": dict(offset=0, size=(1,) * 64, stride=(1,) * 64),
      "offset_float": dict(offset=1.5, size=(4,), stride=(1,)),
      "offset_float_integral": dict(offset=1.0, size=(4,), stride=(1,)),
      "size_float": dict(offset=0, size=(2.0,), stride=(1,)),
      "stride_string": dict(offset=0, size=(4,), stride=("1",)),
      "offset_bool": dict(offset=True, size=(4,), stride=(1,)),
      "size_bool": dict(offset=0, size=(True,), stride=(1,)),
      "stride_bool": dict(offset=0, size=(4,), stride=(True,)),
      "offset_none": dict(offset=None, size=(4,), stride=(1,)),
      "size_not_a_tuple": dict(offset=0, size=4, stride=(1,)),
      "size_stride_length_mismatch": dict(offset=0, size=(2, 2), stride=(1,)),
      "numel_exceeds_member": dict(offset=0, size=(numel,), stride=(1,), numel=2**40),
      "numel_negative": dict(offset=0, size=(1,), stride=(1,), numel=-1),
      "numel_string": dict(offset=0, size=(1,), stride=(1,), numel="10"),
      "numel_smaller_than_member": dict(offset=0, size=(1,), stride=(1,), numel=1),
      "key_path_traversal": dict(key="../byteorder", offset=0, size=(1,), stride=(1,)),
      "key_absolute_path": dict(key="/etc/passwd", offset=0, size=(1,), stride=(1,)),
      "key_not_a_string": dict(key=int(t.key), offset=0, size=(1,), stride=(1,)),
      "storage_type_not_allowed": dict(offset=0, size=(1,), stride=(1,), storage="ComplexFloatStorage"),
      "rebuild_two_arguments": dict(args=(0,)),
      "rebuild_size_none": dict(args=(0, None, None, False, ODict([]))),
  }
  cases = []
  for case_id, spec in specs.items():
    spec = dict(spec)
    bad = dataclasses.replace(t, **spec)
    tree = replace(fx.tree, ("model", name), bad)
    cases.append(Case(f"oob_{case_id}", fx.write(ctx.path(f"oob_{case_id}.pth"), tree), _expect(PTH_ENTRIES),
                      config="reduced"))
  # storage type given as a string instead of a global; storage member not a whole number of elements
  pid_string = Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                      (Pid(("storage", "FloatStorage", t.key, "cpu", numel)), 0, (1,), (1,), False, ODict([])))
  cases.append(Case("oob_storage_type_string", fx.write(ctx.path("oob_storage_type_string.pth"),
                                                        replace(fx.tree, ("model", name), pid_string)),
                    _expect(PTH_ENTRIES), config="reduced"))
  storages = dict(fx.storages)
  storages[t1.key] = (t1.storage, storages[t1.key][1] + b"\x00")
  cases.append(Case("oob_member_not_whole_elements",
                    write_pth(ctx.path("oob_member_not_whole_elements.pth"), fx.tree, storages,
                              prefix=fx.prefix.rstrip("/")), _expect(PTH_ENTRIES), config="reduced"))
  return cases


def bombs(ctx: Context) -> list[Case]:
  """Class 2: memory and CPU bombs."""
  fx = ctx.fixture
  name, t = _first_tensor(fx, 1)
  cases = []
  size = 3 << 29                                       # 1.5 GiB of zeros, deflated to ~1.5 MB
  stream, crc = deflated_zeros(size)
  base = torch_members(None, {"0": ("FloatStorage", np.arange(10, dtype=np.float32))},
                       pkl=pickle_bytes({"model": ODict([("w", Tensor("0", 0, (10,), (1,), numel=10))]), "step": 1}))
  honest = [m if not m.name.endswith("data/0") else Member(m.name, b"", zipfile.ZIP_DEFLATED, stream, crc, size)
            for m in base]
  cases.append(Case("bomb_inflate_declared_size", write(ctx.path("bomb_inflate_declared.pth"), zip_bytes(honest)),
                    _expect(PTH_ENTRIES)))
  lying = [m if not m.name.endswith("data/0") else Member(m.name, b"", zipfile.ZIP_DEFLATED, stream,
                                                          zlib.crc32(bytes(40)), 40) for m in base]
  cases.append(Case("bomb_inflate_lying_header", write(ctx.path("bomb_inflate_lying.pth"), zip_bytes(lying)),
                    _expect(("load_pth", "read_checkpoint", "inception"), EITHER)))
  pkl_bomb = [Member(base[0].name, b"", zipfile.ZIP_DEFLATED, *_pickle_bomb_stream(size)), *base[1:]]
  cases.append(Case("bomb_pickle_declared_huge", write(ctx.path("bomb_pickle_huge.pth"), zip_bytes(pkl_bomb)),
                    _expect(PTH_ENTRIES)))

  def variant(case_id, tree, expect, check=None, storages=None):
    path = write_pth(ctx.path(f"{case_id}.pth"), tree, storages if storages is not None else fx.storages,
                     prefix=fx.prefix.rstrip("/"))
    cases.append(Case(case_id, path, expect, check, config="reduced"))

  big = {"0": ("FloatStorage", np.zeros(1, np.float32))}
  variant("bomb_stride0_terabytes", {"model": ODict([("w", Tensor("0", 0, (2**20, 2**20), (0, 0)))]), "step": 1},
          _expect(PTH_ENTRIES), storages=big)
  variant("bomb_stride0_one_gib_view", {"model": ODict([("w", Tensor("0", 0, (2**14, 2**14), (0, 0)))]), "step": 1},
          _expect(("load_pth", "read_checkpoint"), EITHER), storages=big)
  shared = {"0": ("FloatStorage", np.arange(1 << 18, dtype=np.float32))}
  model = ODict([(f"w{i}", Tensor("0", 0, (512, 512), (512, 1))) for i in range(2048)])
  variant("bomb_one_storage_2048_tensors", {"model": model, "step": 1},
          _expect(("load_pth",), OK, read_checkpoint=EITHER), check="shared", storages=shared)
  memo_list, memo_dict = nested_memo_list(31), nested_memo_dict(30)
  variant("bomb_memo_list_as_tensor", replace(fx.tree, ("model", name), memo_list),
          _expect(CKPT_ENTRIES, load_pth=EITHER))
  variant("bomb_memo_dict_as_model", replace(fx.tree, ("model",), memo_dict), _expect(CKPT_ENTRIES, load_pth=EITHER))
  variant("bomb_memo_list_as_step", replace(fx.tree, ("step",), memo_list), _expect(CKPT_ENTRIES, load_pth=EITHER))
  variant("bomb_memo_list_as_shadow_params", replace(fx.tree, ("ema", "shadow_params"), memo_list),
          _expect(CKPT_ENTRIES, load_pth=EITHER))
  variant("bomb_memo_list_in_optimizer", replace(fx.tree, ("optimizer",), memo_list),
          _expect(("load_pth", "read_checkpoint"), EITHER, cli=EITHER))
  for kind, raw in (("list", deep_list(100_000)), ("tuple", deep_tuple(100_000)), ("dict", deep_dict(100_000))):
    variant(f"bomb_deep_{kind}_as_tensor", replace(fx.tree, ("model", name), raw), _expect(PTH_ENTRIES))
  variant("bomb_deep_list_in_optimizer", replace(fx.tree, ("optimizer",), deep_list(100_000)), _expect(PTH_ENTRIES))
  marks = Raw(pickle.MARK * 100_000 + pickle.NONE + pickle.POP_MARK * 99_999 + pickle.TUPLE)   # 100k open marks
  variant("bomb_marks_100k", replace(fx.tree, ("optimizer",), marks), _expect(PTH_ENTRIES, load_pth=EITHER))
  # CPython's unpickler grows its memo array to the index: 32 GiB for this one (a reader may refuse it,
  # or keep the memo in a dict and read the file)
  huge_memo = Raw(pickle.EMPTY_LIST + pickle.LONG_BINPUT + struct.pack("<I", 0xFFFFFFF0))
  variant("bomb_memo_index", replace(fx.tree, ("optimizer",), huge_memo), _expect(PTH_ENTRIES, EITHER))
  for case_id, raw in (("string_length", pickle.BINUNICODE + struct.pack("<I", 0xFFFFFFFF) + b"abc"),
                       ("binbytes8_length", pickle.BINBYTES8 + struct.pack("<Q", 2**62) + b"abc"),
                       ("long4_length", pickle.LONG4 + struct.pack("<i", 2**31 - 1) + b"abc")):
    pkl = fx.pkl[:-1] + b"0" + raw                  # after the checkpoint (POP'ed): a lying length, then EOF
    cases.append(Case(f"bomb_{case_id}", write(ctx.path(f"bomb_{case_id}.pth"), zip_bytes(fx.members_with(pkl))),
                      _expect(PTH_ENTRIES)))
  return cases


def _pickle_bomb_stream(size: int) -> tuple[bytes, int, int]:
  """(deflate stream, crc32, declared size) of a ``size``-byte data.pkl: PROTO 2, then BINBYTES8 of
  ``size - 11`` zero bytes (a pickle that asks the unpickler to hold all of it), deflated to ~size/1000."""
  head = pickle.PROTO + b"\x02" + pickle.BINBYTES8 + struct.pack("<Q", size - 11)
  chunk = 1 << 24
  assert size % chunk == 0
  first = zlib.compressobj(9, zlib.DEFLATED, -15)
  stream = first.compress(head + bytes(chunk - len(head))) + first.flush(zlib.Z_FULL_FLUSH)
  rest = zlib.compressobj(9, zlib.DEFLATED, -15)
  block = rest.compress(bytes(chunk)) + rest.flush(zlib.Z_FULL_FLUSH)
  stream += block * (size // chunk - 1) + rest.flush()
  crc = zlib.crc32(head + bytes(chunk - len(head)))
  zeros = bytes(chunk)
  for _ in range(size // chunk - 1):
    crc = zlib.crc32(zeros, crc)
  return stream, crc, size


def cross_file(ctx: Context) -> list[Case]:
  """Class 3: BUILD applied to the reader's allow-listed stand-ins; the clean fixture read next in the
  same process must come out bit-identical."""
  fx = ctx.fixture
  f16 = Global("torch", "float16")

  def pid(i):                                    # the persistent id of the fixture's i-th storage
    key, (kind, data) = list(fx.storages.items())[i]
    return Pid(("storage", Global("torch", kind), key, "cpu", len(data) // STORAGE_ITEMSIZE[kind]))
  builds = {
      "storage_type_dict_state": Build(Global("torch", "FloatStorage"), {"dtype": f16}),
      "storage_type_slot_state": Build(Global("torch", "FloatStorage"), (None, {"dtype": f16})),
      "storage_type_int_dtype": Build(Global("torch", "FloatStorage"), (None, {"dtype": Global("torch", "int64")})),
      "double_storage_as_half": Build(Global("torch", "DoubleStorage"), {"dtype": f16, "itemsize": 2}),
      "rebuild_function_defaults": Build(Global("torch._utils", "_rebuild_tensor_v2"),
                                         (None, {"__defaults__": (0, (1,), (1,))})),
      "rebuild_function_dict": Build(Global("torch._utils", "_rebuild_tensor_v2"), {"__wrapped__": f16}),
      "rebuild_parameter_kwdefaults": Build(Global("torch._utils", "_rebuild_parameter"),
                                            (None, {"__kwdefaults__": {"requires_grad": True}})),
      "ordereddict_class_attribute": Build(Global("collections", "OrderedDict"), (None, {"__setitem__": f16})),
      "dtype_setstate": Build(Global("torch", "float32"), (3, ">", None, None, None, 8, 8, 0)),
      "dtype_dict_state": Build(Global("torch", "float32"), {"type": Global("torch", "float16")}),
      "storage_array_setstate": Build(pid(0), (1, (2,), Global("torch", "float16"), False, b"\x00\x3c\x00\x3c")),
      "storage_array_strides": Build(pid(1), (None, {"strides": (2**40,), "shape": (8,)})),
      "storage_array_dtype": Build(pid(1), (None, {"dtype": Global("torch", "float16")})),
  }
  cases = []
  for case_id, build in builds.items():
    # the BUILD happens first (in 'optimizer', which the reader never looks at), then the whole checkpoint
    tree = {"optimizer": build, **{k: v for k, v in fx.tree.items() if k != "optimizer"}}
    path = fx.write(ctx.path(f"build_{case_id}.pth"), tree)
    cases.append(Case(f"build_{case_id}", path, _expect(("load_pth", "read_checkpoint"), EITHER), check="fixture",
                      clean=[fx.path], config="reduced"))
  return cases


def code_execution(ctx: Context) -> list[Case]:
  """Class 4: pickles that would import or run something; each would create a marker file if it ran."""
  fx = ctx.fixture
  cases = []

  def case(case_id, payload, where=("optimizer",)):
    touch = ctx.touch(case_id)
    node = payload(touch) if callable(payload) else payload
    tree = replace(fx.tree, where, node) if where else node
    path = fx.write(ctx.path(f"exec_{case_id}.pth"), tree)
    cases.append(Case(f"exec_{case_id}", path, _expect(PTH_ENTRIES), config="reduced"))

  G = Global
  case("os_system", lambda c: Reduce(G("os", "system"), (c,)))
  case("posix_system", lambda c: Reduce(G("posix", "system"), (c,)))
  case("nt_system", lambda c: Reduce(G("nt", "system"), (c,)))
  case("builtins_eval", lambda c: Reduce(G("builtins", "eval"), (f"__import__('os').system({c!r})",)))
  case("builtins_exec", lambda c: Reduce(G("builtins", "exec"), (f"import os; os.system({c!r})",)))
  case("subprocess_popen", lambda c: Reduce(G("subprocess", "Popen"), (c.split(),)))
  case("subprocess_check_call", lambda c: Reduce(G("subprocess", "check_call"), (c.split(),)))
  case("getattr_chain", lambda c: Reduce(Reduce(G("builtins", "getattr"), (Reduce(G("builtins", "__import__"), ("os",)),
                                                                           "system")), (c,)))
  case("dotted_name", lambda c: Reduce(G("torch._utils", "_rebuild_tensor_v2.__globals__"), ()))
  case("dotted_name_allowed_prefix", lambda c: Reduce(G("collections", "OrderedDict.__init__"), ()))
  case("stack_global", lambda c: Reduce(G("os", "system", stack=True), (c,)))
  case("stack_global_allowed_name", lambda c: Reduce(G("collections", "OrderedDict", stack=True), ()))
  cases[-1].expect = _expect(PTH_ENTRIES, EITHER)          # allow-listed, only spelled the protocol-4 way
  case("inst", lambda c: Raw(lambda p: (p.mark().str(c), p.raw(pickle.INST + b"os\nsystem\n"))))
  case("obj", lambda c: Raw(lambda p: (p.mark(), p.raw(pickle.GLOBAL + b"os\nsystem\n"), p.str(c), p.op("OBJ"))))
  case("newobj", lambda c: Raw(pickle.GLOBAL + b"subprocess\nPopen\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ))
  case("newobj_ex", lambda c: Raw(pickle.GLOBAL + b"subprocess\nPopen\n" + pickle.EMPTY_TUPLE + pickle.EMPTY_DICT
                                  + pickle.NEWOBJ_EX))
  def ext(opcode, c, args):                       # the child registers these codes for os.system & co
    return Raw(lambda p: (p.raw(opcode), emit(p, args), p.op("REDUCE")))
  case("ext1", lambda c: ext(pickle.EXT1 + bytes([0xF0]), c, (c,)))
  case("ext2", lambda c: ext(pickle.EXT2 + struct.pack("<H", 0x1234), c, (c,)))
  case("ext4", lambda c: ext(pickle.EXT4 + struct.pack("<i", 0x12345678), c, (c.split(),)))
  case("ext1_unregistered", Raw(pickle.EXT1 + bytes([0x07])))
  case("persistent_id_string", lambda c: Pid("os.system"))
  case("persistent_id_text_opcode", lambda c: Pid("storage", text=True))
  case("persistent_id_module_tuple", lambda c: Pid(("module", "os", "system", c)))
  case("persistent_id_six_fields", lambda c: Pid(("storage", G("torch", "FloatStorage"), "0", "cpu", 1, c)))
  case("persistent_id_reduce_type", lambda c: Pid(("storage", Reduce(G("os", "system"), (c,)), "0", "cpu", 1)))
  case("persistent_id_code_location", lambda c: Pid(("storage", G("torch", "FloatStorage"), "0",
                                                     Reduce(G("os", "system"), (c,)), 1)))
  case("import_of_a_module", lambda c: Reduce(G(ctx.pwn_module, "run"), ()))
  case("torch_load", lambda c: Reduce(G("torch", "load"), (c,)))
  case("numpy_reconstruct", lambda c: Reduce(G("numpy.core.multiarray", "_reconstruct"),
                                             (G("numpy", "ndarray"), (0,), b"b")))
  case("copyreg_reconstructor", lambda c: Reduce(G("copyreg", "_reconstructor"),
                                                 (G("os", "system"), G("builtins", "object"), None)))
  case("storage_type_called", lambda c: Reduce(G("torch", "FloatStorage"), (c,)))
  case("dtype_called", lambda c: Reduce(G("torch", "float32"), (c,)))
  case("ordereddict_with_reduce_args", lambda c: Reduce(G("collections", "OrderedDict"),
                                                        ([("a", Reduce(G("os", "system"), (c,)))],)))
  case("as_top_level", lambda c: Reduce(G("os", "system"), (c,)), where=())
  case("as_model_key", lambda c: {"model": {Reduce(G("os", "system"), (c,)): 1}, "step": 1}, where=())
  return cases


def malformed(ctx: Context) -> list[Case]:
  """Class 5: malformed .pth files that used to end in tracebacks."""
  fx = ctx.fixture
  cases = []
  red = "reduced"

  def add(case_id, path, expect=None, **kw):
    cases.append(Case(f"bad_{case_id}", path, expect if expect is not None else _expect(PTH_ENTRIES), config=red, **kw))

  def tree_case(case_id, tree, expect=None):
    add(case_id, fx.write(ctx.path(f"bad_{case_id}.pth"), tree), expect or _expect(CKPT_ENTRIES, load_pth=EITHER))

  def zipped(case_id, members, expect=None):
    add(case_id, write(ctx.path(f"bad_{case_id}.pth"), zip_bytes(members)), expect)

  members = fx.members_with(fx.pkl)
  pkl_name = f"{fx.prefix}data.pkl"
  add("empty_file", write(ctx.path("bad_empty"), b""))
  add("garbage_bytes", write(ctx.path("bad_garbage"), random.Random(0).randbytes(4096)))
  add("garbage_starting_like_msgpack", write(ctx.path("bad_garbage_mp"), b"\x85" + random.Random(1).randbytes(4096)))
  add("raw_pickle", write(ctx.path("bad_raw.pth"), fx.pkl))
  legacy_magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)     # torch's pre-1.6 format starts so
  add("raw_pickle_legacy_magic", write(ctx.path("bad_legacy.pth"), legacy_magic + fx.pkl))
  add("zip_truncated", write(ctx.path("bad_zip_truncated.pth"), open(fx.path, "rb").read()[:300_000]))
  add("zip_empty", write(ctx.path("bad_zip_empty.pth"), zip_bytes([])))
  zipped("truncated_pickle", fx.members_with(fx.pkl[: len(fx.pkl) // 2]))
  zipped("pickle_without_stop", fx.members_with(fx.pkl[:-1]))
  zipped("pickle_empty", fx.members_with(b""))
  zipped("pickle_trailing_garbage", fx.members_with(fx.pkl + b"garbage"), _expect(PTH_ENTRIES, EITHER))
  zipped("no_data_pkl", [m for m in members if m.name != pkl_name])
  zipped("two_data_pkl", members + [Member("other/data.pkl", pickle_bytes({"model": {}, "step": 1}))])
  zipped("duplicate_data_pkl", members + [Member(pkl_name, pickle_bytes({"model": ODict([]), "step": 1}))])
  name0, t0 = _first_tensor(fx, 1)
  store = f"{fx.prefix}data/{t0.key}"
  zipped("duplicate_storage_member", members + [Member(store, bytes(len(dict(fx.members)[store])))])
  zipped("storage_member_missing", [m for m in members if m.name != store])
  zipped("crc_mismatch_storage", [dataclasses.replace(m, crc=zlib.crc32(m.data) ^ 1) if m.name == store else m
                                  for m in members])
  zipped("crc_mismatch_pickle", [dataclasses.replace(m, crc=zlib.crc32(m.data) ^ 1) if m.name == pkl_name else m
                                 for m in members])
  zipped("declared_size_mismatch", [dataclasses.replace(m, size=len(m.data) + 4) if m.name == store else m
                                    for m in members])
  zipped("local_and_central_names_differ", [dataclasses.replace(m, central_name=m.name + "x") if m.name == store else m
                                            for m in members])
  zipped("unsupported_compression", [dataclasses.replace(m, method=99) if m.name == store else m for m in members])
  zipped("encrypted_flag", [dataclasses.replace(m, flags=1) if m.name == pkl_name else m for m in members])
  zipped("bad_byteorder", [Member(m.name, b"middle") if m.name.endswith("byteorder") else m for m in members])
  zipped("byteorder_empty", [Member(m.name, b"") if m.name.endswith("byteorder") else m for m in members])
  tree_case("top_level_list", [fx.tree["model"]])
  tree_case("top_level_int", 7)
  tree_case("model_missing", {k: v for k, v in fx.tree.items() if k != "model"})
  tree_case("model_not_a_dict", replace(fx.tree, ("model",), [v for _, v in fx.tree["model"].items]))
  tree_case("model_int_key", replace(fx.tree, ("model",),
                                     ODict([(i, v) for i, (_, v) in enumerate(fx.tree["model"].items)])))
  tree_case("model_tuple_key", replace(fx.tree, ("model",), ODict([((k,), v) for k, v in fx.tree["model"].items])))
  tree_case("model_value_string", replace(fx.tree, ("model", name0), "weights"))
  tree_case("model_value_none", replace(fx.tree, ("model", name0), None))
  for kind in ("LongStorage", "IntStorage", "BoolStorage", "ByteStorage"):
    item = STORAGE_ITEMSIZE[kind]
    storages = dict(fx.storages)
    storages["int_weights"] = (kind, bytes(item * int(np.prod(t0.size))))
    tensor = dataclasses.replace(t0, key="int_weights", storage=kind, numel=None, offset=0)
    tree = replace(fx.tree, ("model", name0), tensor)
    add(f"weights_{kind}", write_pth(ctx.path(f"bad_weights_{kind}.pth"), tree, storages, prefix=fx.prefix.rstrip("/")),
        _expect(CKPT_ENTRIES, load_pth=EITHER))
  for case_id, step in (("2pow31", 2**31), ("2pow63", 2**63), ("negative", -1), ("float", 7.0), ("string", "7"),
                        ("none", None), ("bool", True), ("list", [7])):
    tree_case(f"step_{case_id}", replace(fx.tree, ("step",), step))
  shadow = fx.tree["ema"]["shadow_params"]
  tree_case("ema_count_mismatch", replace(fx.tree, ("ema", "shadow_params"), shadow[:-1]))
  tree_case("ema_count_extra", replace(fx.tree, ("ema", "shadow_params"), shadow + shadow[:1]))
  i4 = next(i for i, s in enumerate(shadow) if len(s.size) == 4)
  tree_case("ema_shape_mismatch", replace(fx.tree, ("ema", "shadow_params", i4),
                                          dataclasses.replace(shadow[i4], size=tuple(reversed(shadow[i4].size)),
                                                              stride=tuple(reversed(shadow[i4].stride)))))
  tree_case("ema_not_a_dict", replace(fx.tree, ("ema",), [1, 2]))
  tree_case("shadow_params_not_a_list", replace(fx.tree, ("ema", "shadow_params"), {"a": shadow[0]}))
  tree_case("shadow_params_entry_string", replace(fx.tree, ("ema", "shadow_params", 0), "x"))
  return cases


def msgpack_cases(ctx: Context) -> list[Case]:
  """Class 5, flax msgpack format."""
  import msgpack

  state = read_msgpack_fixture(ctx.msgpack_fixture)
  entries = CKPT_ENTRIES
  cases = []

  def add(case_id, data, expect=None):
    path = write(ctx.path(f"mp_{case_id}"), data)
    cases.append(Case(f"mp_{case_id}", path, expect if expect is not None else _expect(entries), config="reduced_jax"))

  def with_leaf(case_id, ext, expect=None, tree="params_ema"):
    packed = _to_msgpack_tree(state)
    node = packed[tree] if tree == "params_ema" else packed["optimizer"]["target"]
    first = next(iter(node))
    while isinstance(node[first], dict):
      node = node[first]
      first = next(iter(node))
    node[first] = ext
    add(case_id, msgpack.packb(packed, use_bin_type=True), expect)

  def with_top(case_id, **changes):
    packed = _to_msgpack_tree(state)
    for k, v in changes.items():
      if v is _DROP:
        packed.pop(k)
      else:
        packed[k] = _to_msgpack_tree(v)
    add(case_id, msgpack.packb(packed, use_bin_type=True))

  good = msgpack_bytes(state)
  add("deep_arrays", b"\x81\xa4step" + b"\x91" * 100_000 + b"\xc0")
  add("deep_maps", b"\x82\xa4step\x00\xa9optimizer" + b"\x81\xa1a" * 100_000 + b"\xc0")
  add("deep_maps_1000", b"\x83\xa4step\x00\xa9optimizer\x81\xa6target\x80\xaaparams_ema" + b"\x81\xa1a" * 1000
      + b"\x80")
  add("truncated", good[: len(good) // 2])
  add("trailing_garbage", good + b"\xc1junk", _expect(entries, EITHER))
  add("empty_map", b"\x80")
  add("map32_claims_4g_entries", b"\xdf\xff\xff\xff\xff\xa4step")
  add("str32_claims_4g", b"\x81\xdb\xff\xff\xff\xffabc")
  add("ext32_claims_4g", b"\x81\xa4step\xc9\xff\xff\xff\xff\x01abc")
  leaf = next(iter(flatten(state["params_ema"]).values()))
  for name in ("object", "O", "V8", "U4", "S4", "M8", "float33", "f4,f4", "[('a','<f4')]", "bool", "int64",
               "complex64"):
    try:
      item = np.dtype(name).itemsize or 4
    except TypeError:
      item = 4
    buffer = leaf.tobytes()[: len(leaf.tobytes()) // item * item]
    with_leaf(f"dtype_{name}", ndarray_ext(shape=[len(buffer) // item], dtype=name, buffer=buffer))
  with_leaf("dtype_not_a_string", ndarray_ext(shape=[1], dtype=5, buffer=b"\x00" * 4))
  with_leaf("buffer_shape_mismatch", ndarray_ext(shape=[3, 3], dtype="float32", buffer=b"\x00" * 32))
  with_leaf("shape_huge", ndarray_ext(shape=[2**40, 2**40], dtype="float32", buffer=b"\x00" * 4))
  with_leaf("shape_negative", ndarray_ext(shape=[-1], dtype="float32", buffer=b"\x00" * 16))
  with_leaf("shape_not_a_list", ndarray_ext(shape="abc", dtype="float32", buffer=b"\x00" * 12))
  with_leaf("ext_not_msgpack", msgpack.ExtType(1, b"\xc1\xc1"))
  with_leaf("ext_unknown_code", msgpack.ExtType(42, b"abc"))
  with_leaf("ext_deep_inside", msgpack.ExtType(1, b"\x91" * 100_000 + b"\xc0"))
  with_leaf("leaf_int", 7)
  with_leaf("leaf_string", "weights")
  with_leaf("leaf_list", [1.0, 2.0])
  with_leaf("chunked_shape_mismatch", {"__msgpack_chunked_array__": True, "shape": {"0": 2**40},
                                       "chunks": {"0": ndarray_ext(np.zeros(4, np.float32))}})
  with_leaf("chunked_not_arrays", {"__msgpack_chunked_array__": True, "shape": {"0": 2}, "chunks": {"0": "ab"}})
  # The raw and EMA trees of a score_sde State hold the same names, shapes and dtypes: a file where they
  # differ was changed (msgpack has no checksum, so this is what catches a flipped byte in a name).
  def copy(tree):
    return {k: copy(v) if isinstance(v, dict) else v for k, v in tree.items()}

  def ema_variant(case_id, change, expect=None):
    target, ema = copy(state["optimizer"]["target"]), copy(state["params_ema"])
    change(target, ema)
    add(case_id, msgpack_bytes({**state, "optimizer": {**state["optimizer"], "target": target}, "params_ema": ema}),
        expect)

  def first_leaf(tree):                                # (the dict holding the first array, its key)
    key = next(iter(tree))
    return first_leaf(tree[key]) if isinstance(tree[key], dict) else (tree, key)

  def rename(tree):
    node, key = first_leaf(tree)
    node[key[:-1] + chr(ord(key[-1]) ^ 1)] = node.pop(key)

  def reshape(tree):
    node, key = first_leaf(tree)
    node[key] = np.ascontiguousarray(node[key]).reshape(-1, 1)

  def widen(tree):
    node, key = first_leaf(tree)
    node[key] = node[key].astype(np.float64)
  ema_variant("ema_name_differs", lambda t, e: rename(e))
  ema_variant("target_name_differs", lambda t, e: rename(t))
  ema_variant("ema_shape_differs", lambda t, e: reshape(e))
  ema_variant("ema_dtype_differs", lambda t, e: widen(e))
  ema_variant("ema_layer_missing", lambda t, e: e.pop(next(iter(e))))
  ema_variant("both_renamed_alike", lambda t, e: (rename(t), rename(e)), _expect(("read_checkpoint", "cli"), EITHER))
  with_top("missing_optimizer", optimizer=_DROP)
  with_top("missing_params_ema", params_ema=_DROP)
  with_top("missing_target", optimizer={"state": {}})
  with_top("optimizer_not_a_map", optimizer=[1, 2])
  with_top("params_ema_not_a_map", params_ema=[1.0])
  with_top("params_ema_int_keys", params_ema={1: np.zeros(3, np.float32)})
  for case_id, step in (("2pow31", np.asarray(2**31, np.int64)), ("negative", np.asarray(-1, np.int32)),
                        ("float", np.asarray(1.5, np.float32)), ("string", "7"), ("uint64_max", 2**64 - 1),
                        ("vector", np.arange(3, dtype=np.int32))):
    with_top(f"step_{case_id}", step=step)
  return cases


_DROP = object()


def positive(ctx: Context) -> list[Case]:
  """Valid files the readers must read exactly (the writer's positive control): the committed fixtures,
  the fixtures rebuilt by this module's writer, and hand-written tensor tables with known contents."""
  fx = ctx.fixture
  both = {"load_pth": OK, "read_checkpoint": OK, "load_score_sde": OK}
  cases = [Case("pos_fixture", fx.path, dict(both), "fixture", config="reduced"),
           Case("pos_fixture_rebuilt", fx.write(ctx.path("pos_rebuilt.pth")), dict(both), "fixture", config="reduced")]
  big = np.arange(7, dtype=">f4")
  half = np.linspace(-1, 1, 6).astype(np.float16)
  double = np.linspace(0, 1, 5)
  storages = {"0": ("FloatStorage", big), "1": ("HalfStorage", half.astype(">f2")),
              "2": ("DoubleStorage", double.astype(">f8"))}
  model = ODict([("module.t", Tensor("0", 1, (3, 2), (1, 3))), ("module.s", Tensor("0", 6, (), ())),
                 ("module.same", Tensor("0", 0, (7,), (1,))), ("module.h", Tensor("1", 2, (2, 2), (2, 1))),
                 ("module.d", Tensor("2", 0, (5,), (1,))), ("module.e", Tensor("0", 3, (0,), (1,)))],
                metadata=ODict([("", {"version": 1})]))
  expected = {"module.t": digest(np.arange(1, 7, dtype=np.float32).reshape(2, 3).T),
              "module.s": digest(np.array(6, np.float32)), "module.same": digest(np.arange(7, dtype=np.float32)),
              "module.h": digest(half[2:6].reshape(2, 2)), "module.d": digest(double),
              "module.e": digest(np.zeros((0,), np.float32))}
  path = write_pth(ctx.path("pos_handwritten.pth"), {"model": model, "step": 3}, storages, prefix="x", byteorder="big")
  cases.append(Case("pos_handwritten_big_endian_views", path, {"load_pth": OK, "read_checkpoint": OK}, "expected"))
  cases[-1].expected = expected
  flat = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "bn.running_mean": np.ones(2, np.float32)}
  path = write_pth(ctx.path("pos_state_dict.pth"),
                   ODict([(k, Tensor.dense(k, v.shape)) for k, v in flat.items()]),
                   {k: ("FloatStorage", v) for k, v in flat.items()})
  cases.append(Case("pos_inception_state_dict", path, {"load_pth": OK, "inception": OK}, "state_dict"))
  cases[-1].expected = {k: digest(v) for k, v in flat.items()}
  state = read_msgpack_fixture(ctx.msgpack_fixture)
  cases.append(Case("pos_msgpack", ctx.msgpack_fixture, {"read_checkpoint": OK, "load_score_sde": OK}, "msgpack_table",
                    config="reduced_jax"))
  cases.append(Case("pos_msgpack_rebuilt", write(ctx.path("pos_msgpack_rebuilt"), msgpack_bytes(state)),
                    {"read_checkpoint": OK, "load_score_sde": OK}, "msgpack_table", config="reduced_jax"))
  return cases

CLASSES = {"positive": positive, "out_of_bounds": out_of_bounds, "bombs": bombs, "cross_file": cross_file,
           "code_execution": code_execution, "malformed": malformed, "msgpack": msgpack_cases}


# --------------------------------------------------------------------------------------------- fuzzing
def pickle_region(data: bytes) -> tuple[int, int]:
  """Byte range of the data.pkl member's contents inside a zip file (stored members only)."""
  with zipfile.ZipFile(io.BytesIO(data)) as z:
    info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
  name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
  start = info.header_offset + 30 + name_len + extra_len
  return start, start + info.compress_size


def _int_operands(pkl: bytes) -> list[tuple[int, int]]:
  """(position, width) of the operands of BININT1/BININT2/BININT opcodes (offsets, sizes, strides, numels)."""
  width = {"BININT1": 1, "BININT2": 2, "BININT": 4}
  return [(pos + 1, width[op.name]) for op, _, pos in pickletools.genops(pkl) if op.name in width]


def _mutate(data: bytes, rng: random.Random, lo: int, hi: int, operands=None, spans=None) -> tuple[bytes, str]:
  """One seeded mutation of ``data`` at positions in [lo, hi) (or, 70% of the time, inside ``spans``)."""
  b = bytearray(data)
  hi = max(hi, lo + 1)
  if spans and rng.random() < 0.7:
    start, end = rng.choice(spans)
    lo, hi = start, max(end, start + 1)
  kind = rng.choice(["flip", "flip", "overwrite", "overwrite", "truncate", "duplicate", "delete", "operand"]
                    if operands else ["flip", "flip", "overwrite", "overwrite", "truncate", "duplicate", "delete"])
  if kind == "flip":
    spots = [rng.randrange(lo, hi) for _ in range(rng.choice([1, 1, 2, 4]))]
    for at in spots:
      b[at] ^= 1 << rng.randrange(8)
    return bytes(b), f"flip bits at {spots}"
  if kind == "overwrite":
    at = rng.randrange(lo, hi)
    n = rng.choice([1, 1, 2, 4, 8])
    value = bytes(rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)]) for _ in range(n))
    b[at:at + n] = value
    return bytes(b[:len(data)]), f"overwrite {n} bytes at {at} with {value.hex()}"
  if kind == "truncate":
    at = rng.randrange(lo, hi)
    return bytes(b[:at]), f"truncate at {at}"
  if kind == "duplicate":
    at = rng.randrange(lo, hi)
    n = rng.choice([1, 2, 5, 16, 64, 512])
    to = rng.randrange(lo, hi)
    return bytes(b[:to] + b[at:at + n] + b[to:]), f"copy {n} bytes from {at} to {to}"
  if kind == "delete":
    at = rng.randrange(lo, hi)
    n = rng.choice([1, 2, 5, 16, 64])
    return bytes(b[:at] + b[at + n:]), f"delete {n} bytes at {at}"
  pos, width = rng.choice(operands)
  value = rng.choice([0, 1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, -1, -2**31, rng.randrange(2**16)])
  value = value % (1 << (8 * width)) if width < 4 else value
  b[pos:pos + width] = (value % (1 << 32)).to_bytes(4, "little")[:width]
  return bytes(b), f"set the {width}-byte int operand at {pos} to {value}"


_FUZZ_CACHE: dict = {}


def msgpack_structure(data: bytes) -> list[tuple[int, int]]:
  """Byte ranges of a flax msgpack file's structure rather than its array contents: every map key and
  every array record's head (shape and dtype name), found by searching for their encodings."""
  import msgpack

  state = read_msgpack_fixture_bytes(data)
  needles = set()

  def walk(tree):
    for k, v in tree.items():
      needles.add(msgpack.packb(k, use_bin_type=True))
      if isinstance(v, dict):
        walk(v)
      elif isinstance(v, np.ndarray):
        needles.add(msgpack.packb([list(v.shape), v.dtype.name], use_bin_type=True)[1:])
  walk(state)
  spans = []
  for needle in needles:
    at = data.find(needle)
    while at >= 0:
      spans.append((at, at + len(needle)))
      at = data.find(needle, at + 1)
  return sorted(spans)


def mutant(path: str, mode: str, seed: int, index: int) -> tuple[bytes, str]:
  """Mutant ``index`` of the fixture at ``path``: deterministic in (path's bytes, mode, seed, index).

  Modes: 'raw' (a .pth's bytes, mostly inside the data.pkl member, the zip's CRC left as it is),
  'pickle' (the data.pkl bytes mutated and re-zipped with valid CRCs, so the mutation reaches the
  unpickler), 'msgpack' (a flax checkpoint's bytes)."""
  if path not in _FUZZ_CACHE:
    with open(path, "rb") as f:
      data = f.read()
    extra = None
    if mode in ("raw", "pickle"):
      fx = read_fixture(path)
      extra = (pickle_region(data), fx, _int_operands(fx.pkl))
    else:
      extra = msgpack_structure(data)
    _FUZZ_CACHE[path] = (data, extra)
  data, extra = _FUZZ_CACHE[path]
  rng = random.Random(f"{seed}/{mode}/{index}")
  if mode == "msgpack":
    return _mutate(data, rng, 0, len(data), spans=extra)
  (lo, hi), fx, operands = extra
  if mode == "raw":
    if rng.random() < 0.7:
      return _mutate(data, rng, lo, hi)
    return _mutate(data, rng, 0, len(data))
  pkl, how = _mutate(fx.pkl, rng, 0, len(fx.pkl), operands)
  return zip_bytes(fx.members_with(pkl)), how


# ------------------------------------------------------------------------------------------ child side
def _vm_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmSize:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no VmSize")


def _maxrss() -> int:
  import resource

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(field)


class PeakRSS:
  """Peak resident memory during a block, over the resident memory at its start (the kernel's
  high-water mark is reset first through /proc/self/clear_refs; without it, ru_maxrss's growth)."""

  def __enter__(self):
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      self.reset = True
    except OSError:
      self.reset = False
    self.start = _status("VmRSS") if self.reset else _maxrss()
    return self

  def __exit__(self, *exc):
    self.growth = (_status("VmHWM") if self.reset else _maxrss()) - self.start


def raw_table(obj) -> dict:
  """load_pth's result in fixture_table's format (without walking anything but model / ema / step)."""
  if not isinstance(obj, dict):
    return {"type": type(obj).__name__}
  step = obj.get("step")
  out: dict = {"step": repr(step)[:100] if isinstance(step, (int, float, str, type(None))) else type(step).__name__}
  model = obj.get("model")
  out["model"] = ({k if isinstance(k, str) else repr(k): digest(v) for k, v in model.items()}
                  if isinstance(model, dict) else type(model).__name__)
  ema = obj.get("ema")
  shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
  listed = isinstance(shadow, list) and len(shadow) < 100_000
  out["shadow"] = [digest(v) for v in shadow] if listed else type(shadow).__name__
  return out


def _flat(tree, prefix="", out=None, depth=0):
  out = {} if out is None else out
  if depth > 64 or len(out) > 100_000:
    out[prefix + "..."] = "too deep"
    return out
  for k, v in tree.items():
    name = f"{prefix}{k if isinstance(k, str) else repr(k)}"
    if isinstance(v, dict):
      _flat(v, name + "/", out, depth + 1)
    else:
      out[name] = v
  return out


def checkpoint_table(ck) -> dict:
  """read_checkpoint's result: digests, plus the violations of its documented contract."""
  import models

  problems = []
  if ck.format not in models.FORMATS:
    problems.append(f"format {ck.format!r}")
  if type(ck.step) is not int or not 0 <= ck.step < 2**31:
    problems.append(f"step {ck.step!r} ({type(ck.step).__name__})")
  tables = {}
  for field in ("params", "ema_params"):
    tree = getattr(ck, field)
    if tree is None and field == "ema_params":
      tables[field] = None
      continue
    if not isinstance(tree, dict):
      problems.append(f"{field} is a {type(tree).__name__}")
      continue
    flat = _flat(tree)
    for k, v in flat.items():
      if not isinstance(v, np.ndarray) or not np.issubdtype(v.dtype, np.floating) and v.dtype.name != "bfloat16":
        problems.append(f"{field}[{k}] is {type(v).__name__} {getattr(v, 'dtype', '')}")
        break
    for k in _key_paths(tree):
      if not isinstance(k, str):
        problems.append(f"{field} has the key {k!r}")
        break
    tables[field] = {k: digest(v) for k, v in flat.items()}
  return {"format": ck.format, "step": repr(ck.step), "params": tables.get("params"), "ema": tables.get("ema_params"),
          "problems": problems}


def _key_paths(tree, depth=0):
  for k, v in tree.items():
    yield k
    if isinstance(v, dict) and depth < 64:
      yield from _key_paths(v, depth + 1)


def _check(kind: str, result, before_rss: int) -> list[str]:
  problems = []
  if kind == "shared":
    model = result.get("model") if isinstance(result, dict) else getattr(result, "params", None)
    arrays = list(model.values()) if isinstance(model, dict) else []
    if len(arrays) != 2048:
      problems.append(f"{len(arrays)} tensors")
    elif any(a.flags.writeable for a in arrays):
      problems.append("writeable arrays")
    elif not all(np.may_share_memory(a, arrays[0]) for a in arrays):
      problems.append("tensors copied, not views of their storage")
    if _maxrss() - before_rss > 256 << 20:
      problems.append(f"peak memory grew by {(_maxrss() - before_rss) >> 20} MiB")
  return problems


def _run_entry(task: dict, entry: str, path: str):
  import contextlib

  import models
  from models import torch_pickle

  if entry == "load_pth":
    return torch_pickle.load_pth(path)
  if entry == "read_checkpoint":
    return models.read_checkpoint(path)
  if entry == "load_score_sde":
    return models.load_score_sde_checkpoint(path, task["_config"])
  if entry == "inception":
    from evaluation import inception
    return inception.read_state_dict(path)
  if entry == "cli":
    from models import convert
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      rc = convert.main([path, "--config", task["config_path"], "--workdir", task["workdir"]])
    return {"rc": rc, "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()[-2000:],
            "workdir_exists": os.path.exists(task["workdir"])}
  raise ValueError(entry)


def _classify(e: BaseException, path: str) -> dict:
  import traceback

  try:
    import models
    ce = getattr(models, "CheckpointError", None)
  except Exception:  # noqa: BLE001
    ce = None
  msg = str(e)
  return {"outcome": "raised", "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
          "checkpoint_error": bool(ce is not None and isinstance(e, ce)), "starts_with_path": msg.startswith(path),
          "message": msg[:400], "traceback": "".join(traceback.format_exception(e)[-3:])[-1500:]}


def run_task(task: dict) -> dict:
  import resource

  entry, path = task["entry"], task["path"]
  if entry == "fuzz":
    return _run_fuzz(task)
  before_rss = _maxrss()
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  with PeakRSS() as peak:
    t0 = time.perf_counter()
    try:
      result = _run_entry(task, entry, path)
      out = {"outcome": "ok"}
    except BaseException as e:  # noqa: BLE001 -- every outcome is reported, the parent judges
      result, out = None, _classify(e, path)
    wall = time.perf_counter() - t0
  cpu1 = resource.getrusage(resource.RUSAGE_SELF)
  out.update(wall=wall, cpu=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
             rss_growth=peak.growth)
  if out["outcome"] == "ok":
    try:
      if entry == "load_pth":
        out["table"] = raw_table(result if task.get("check") != "state_dict" else {"model": result})
      elif entry == "read_checkpoint":
        out["table"] = checkpoint_table(result)
      elif entry == "cli":
        out["cli"] = result
      elif entry == "inception":
        out["table"] = ({"model": {k: digest(v) for k, v in result.items()}} if isinstance(result, dict)
                        else {"type": type(result).__name__})
      if task.get("check"):
        out["check_problems"] = _check(task["check"], result, before_rss)
    except BaseException as e:  # noqa: BLE001
      out["summary_error"] = f"{type(e).__name__}: {e}"[:400]
  del result
  if task.get("clean"):
    import models
    from models import torch_pickle
    out["clean"] = []
    for clean in task["clean"]:
      try:
        out["clean"].append({"raw": raw_table(torch_pickle.load_pth(clean)),
                             "checkpoint": checkpoint_table(models.read_checkpoint(clean))})
      except BaseException as e:  # noqa: BLE001
        out["clean"].append({"error": f"{type(e).__name__}: {e}"[:400]})
  return out


def _run_fuzz(task: dict) -> dict:
  import resource

  import models

  data, how = mutant(task["fixture"], task["mode"], task["seed"], task["index"])
  path = task["path"]
  with open(path, "wb") as f:
    f.write(data)
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  with PeakRSS() as peak:
    t0 = time.perf_counter()
    try:
      ck, out = models.read_checkpoint(path), {"outcome": "ok"}
    except BaseException as e:  # noqa: BLE001
      ck, out = None, _classify(e, path)
    wall = time.perf_counter() - t0
  cpu1 = resource.getrusage(resource.RUSAGE_SELF)
  if ck is not None:
    out["table"] = checkpoint_table(ck)
  out.update(wall=wall, cpu=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
             rss_growth=peak.growth, mutation=how)
  return out


BASE: dict = {}


def child_main(spec_path: str) -> None:
  import copyreg
  import resource

  with open(spec_path) as f:
    spec = json.load(f)
  import jax
  import jax.numpy as jnp

  import evaluation.inception  # noqa: F401
  import models
  import models.convert
  from models import torch_pickle  # noqa: F401

  jax.jit(lambda x: x + 1)(jnp.zeros(3)).block_until_ready()          # the backend and its threads exist
  configs = {name: models.convert.load_config(p) for name, p in spec["configs"].items()}
  # An extension registry that names dangerous globals: EXT1/2/4 must still go through the allow-list.
  for module, name, code in (("os", "system", 0xF0), ("posix", "system", 0x1234), ("subprocess", "Popen", 0x12345678)):
    copyreg.add_extension(module, name, code)
  if spec.get("limit_bytes"):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + int(spec["limit_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  BASE["rss"] = _maxrss()
  print(TAG + json.dumps({"ready": True, "vm": _vm_bytes(), "rss": BASE["rss"]}), flush=True)
  for task in spec["tasks"]:
    print(TAG + json.dumps({"start": task["task"]}), flush=True)
    task["_config"] = configs.get(task.get("config", ""))
    if task.get("config") in spec["configs"]:
      task["config_path"] = spec["configs"][task["config"]]
    result = run_task(task)
    result["task"] = task["task"]
    print(TAG + json.dumps({"end": result}, default=repr), flush=True)


if __name__ == "__main__":
  child_main(sys.argv[1])
