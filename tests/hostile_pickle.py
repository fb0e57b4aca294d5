"""Hostile pickles, built opcode by opcode without torch (no project imports).

``Pickle`` emits pickle opcodes one by one; ``pickle_bytes`` turns a tree of Python values and nodes
(``Global``, ``Reduce``, ``Build``, ``Pid``, ``ODict``, ``Tensor``, ``Raw``) into a pickle the way
torch.save writes one (protocol 2, ``torch._utils._rebuild_tensor_v2``, persistent ids
``('storage', torch.FloatStorage, key, 'cpu', numel)``, OrderedDict + BUILD of ``_metadata``);
``nested_memo_*`` and ``deep_*`` build the memo and nesting bombs.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct

import numpy as np

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
