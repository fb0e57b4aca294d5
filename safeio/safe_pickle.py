"""A pickle reader that only builds data: a small virtual machine for the opcodes of plain containers.

Python's ``pickle.Unpickler`` is a program interpreter: GLOBAL / REDUCE / BUILD / INST / OBJ / NEWOBJ
import and call whatever the file names. Overriding ``find_class`` (the usual "restricted unpickler")
still leaves BUILD free to mutate any object the allow-list hands out (``__setstate__`` or
``__dict__.update`` on it) and leaves sizes and depths to the file. This reader interprets the opcodes
itself (the format: CPython ``Lib/pickle.py`` and ``Lib/pickletools.py``):
  * containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None) are built directly;
  * GLOBAL / STACK_GLOBAL resolve through an allow-list mapping ``(module, name)`` to a stand-in;
  * REDUCE and BUILD go to the caller's hooks, which decide what may be called or updated;
  * INST, OBJ, NEWOBJ(_EX), EXT1/2/4, PERSID (text) and every other opcode are refused by name;
  * the pickle's length, the MARK nesting and the result's depth are bounded, the result must be
    acyclic, dict keys must be ``str`` or ``int``.
Every problem raises ``PickleFormatError`` (malformed) or ``safeio.untrusted.UnsafePickleError`` (refused).
"""

from __future__ import annotations

import pickletools
import struct
from typing import Any, Callable, Mapping

from safeio.untrusted import UnsafePickleError

MAX_NESTING = 64        # MARK depth while reading, and container depth of the result


class PickleFormatError(Exception):
  """The bytes are not a well-formed pickle of plain data (truncated, inconsistent, too deep)."""


_KEY_TYPES = (str, int)
_SCALARS = (str, bytes, int, float, bool, type(None))


class _Machine:
  """One pass over ``data``; ``run`` returns the object STOP leaves on the stack."""

  def __init__(self, data: bytes, allowed: Mapping[tuple[str, str], Any], persistent_load: Callable,
               reduce: Callable, build: Callable):
    self.data, self.pos = memoryview(data), 0
    self.allowed, self.persistent_load, self.reduce, self.build = allowed, persistent_load, reduce, build
    self.stack: list = []
    self.marks: list[list] = []
    self.memo: dict[int, Any] = {}

  # -- reading the byte stream --
  def take(self, n: int) -> bytes:
    if n < 0 or self.pos + n > len(self.data):
      raise PickleFormatError(f"truncated pickle: {n} bytes wanted at offset {self.pos} of {len(self.data)}")
    chunk = self.data[self.pos:self.pos + n].tobytes()
    self.pos += n
    return chunk

  def unpack(self, fmt: str):
    return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

  def line(self) -> str:
    end = self.data.obj.find(b"\n", self.pos, min(len(self.data), self.pos + 256))
    if end < 0:
      raise PickleFormatError(f"unterminated text argument at offset {self.pos}")
    text = self.take(end - self.pos).decode("utf-8", "strict")
    self.pos += 1
    return text

  def text(self, n: int) -> str:
    try:
      return self.take(n).decode("utf-8", "strict")
    except UnicodeDecodeError:
      raise PickleFormatError(f"invalid UTF-8 string before offset {self.pos}") from None

  # -- the stack --
  def pop(self):
    if not self.stack:
      raise PickleFormatError(f"stack underflow at offset {self.pos}")
    return self.stack.pop()

  def pop_mark(self) -> list:
    if not self.marks:
      raise PickleFormatError(f"no MARK before offset {self.pos}")
    items, self.stack = self.stack, self.marks.pop()
    return items

  def top(self, kind, what: str):
    if not self.stack or not isinstance(self.stack[-1], kind):
      raise PickleFormatError(f"{what} at offset {self.pos} needs a {kind.__name__} on the stack")
    return self.stack[-1]

  def set_items(self, target, items: list) -> None:
    if len(items) % 2:
      raise PickleFormatError(f"odd number of items for SETITEMS at offset {self.pos}")
    for key, value in zip(items[0::2], items[1::2]):
      if type(key) not in _KEY_TYPES:
        raise PickleFormatError(f"a dict key of type {type(key).__name__} (only str and int keys)")
      target[key] = value

  def get(self, index: int):
    if index not in self.memo:
      raise PickleFormatError(f"memo entry {index} read before it was written")
    return self.memo[index]

  def glob(self, module: str, name: str):
    try:
      return self.allowed[(module, name)]
    except (KeyError, TypeError):
      raise UnsafePickleError(f"refusing the global '{module}.{name}': only tensors and plain containers "
                              "may be loaded") from None

  def run(self):
    ops = _OPS
    while True:
      code = self.take(1)
      op = ops.get(code)
      if op is None:
        name = _NAMES.get(code[0], f"unknown opcode {code!r}")
        raise UnsafePickleError(f"refusing the pickle opcode {name} at offset {self.pos - 1}: only plain data "
                                "opcodes are read")
      if op is _stop:
        if len(self.stack) != 1 or self.marks:
          raise PickleFormatError("STOP with a stack that is not one object")
        return self.stack[0]
      op(self)
      if len(self.marks) > MAX_NESTING:
        raise PickleFormatError(f"MARK nesting deeper than {MAX_NESTING}")


def _stop(m):  # handled in run
  pass


def _mark(m):
  m.marks.append(m.stack)
  m.stack = []


def _tuple_n(n):
  def op(m):
    items = [m.pop() for _ in range(n)][::-1]
    m.stack.append(tuple(items))
  return op


def _tuple_from_mark(m):
  items = m.pop_mark()              # replaces m.stack: pop before pushing
  m.stack.append(tuple(items))


def _list_from_mark(m):
  items = m.pop_mark()
  m.stack.append(items)


def _dict_from_mark(m):
  d = {}
  m.set_items(d, m.pop_mark())
  m.stack.append(d)


def _setitem(m):
  value, key = m.pop(), m.pop()
  m.set_items(m.top(dict, "SETITEM"), [key, value])


def _setitems(m):
  items = m.pop_mark()
  m.set_items(m.top(dict, "SETITEMS"), items)


def _append(m):
  value = m.pop()
  m.top(list, "APPEND").append(value)


def _appends(m):
  items = m.pop_mark()
  m.top(list, "APPENDS").extend(items)


def _put(fmt):
  def op(m):
    index = m.unpack(fmt)
    if not m.stack:
      raise PickleFormatError(f"memo PUT with an empty stack at offset {m.pos}")
    m.memo[index] = m.stack[-1]
  return op


def _memoize(m):
  if not m.stack:
    raise PickleFormatError(f"MEMOIZE with an empty stack at offset {m.pos}")
  m.memo[len(m.memo)] = m.stack[-1]


def _long1(m):
  n = m.unpack("<B")
  m.stack.append(int.from_bytes(m.take(n), "little", signed=True))


def _global(m):
  module, name = m.line(), m.line()
  m.stack.append(m.glob(module, name))


def _stack_global(m):
  name, module = m.pop(), m.pop()
  if not (isinstance(module, str) and isinstance(name, str)):
    raise PickleFormatError("STACK_GLOBAL needs two strings")
  m.stack.append(m.glob(module, name))


def _binpersid(m):
  m.stack.append(m.persistent_load(m.pop()))


def _reduce(m):
  args, func = m.pop(), m.pop()
  if not isinstance(args, tuple):
    raise PickleFormatError("REDUCE arguments are not a tuple")
  m.stack.append(m.reduce(func, args))


def _build(m):
  state = m.pop()
  if not m.stack:
    raise PickleFormatError(f"BUILD with an empty stack at offset {m.pos}")
  m.build(m.stack[-1], state)


def _frame(m):
  m.unpack("<Q")                      # a length hint only; the bytes follow inline


def _pop_mark(m):
  m.pop_mark()


def _pop(m):
  m.pop()


def _dup(m):
  if not m.stack:
    raise PickleFormatError(f"DUP with an empty stack at offset {m.pos}")
  m.stack.append(m.stack[-1])


def _proto(m):
  version = m.unpack("<B")
  if not 2 <= version <= 5:
    raise PickleFormatError(f"pickle protocol {version} (2 to 5 are read)")


def _push(value):
  return lambda m: m.stack.append(value)


_OPS = {
    b"\x80": _proto, b"\x95": _frame, b".": _stop, b"(": _mark, b"1": _pop_mark, b"0": _pop, b"2": _dup,
    b"N": _push(None), b"\x88": _push(True), b"\x89": _push(False),
    b"J": lambda m: m.stack.append(m.unpack("<i")), b"K": lambda m: m.stack.append(m.unpack("<B")),
    b"M": lambda m: m.stack.append(m.unpack("<H")), b"\x8a": _long1,
    b"G": lambda m: m.stack.append(m.unpack(">d")),
    b"X": lambda m: m.stack.append(m.text(m.unpack("<I"))),
    b"\x8c": lambda m: m.stack.append(m.text(m.unpack("<B"))),
    b"\x8d": lambda m: m.stack.append(m.text(m.unpack("<Q"))),
    b"C": lambda m: m.stack.append(m.take(m.unpack("<B"))), b"B": lambda m: m.stack.append(m.take(m.unpack("<I"))),
    b"\x8e": lambda m: m.stack.append(m.take(m.unpack("<Q"))),
    b")": lambda m: m.stack.append(()), b"t": _tuple_from_mark,
    b"\x85": _tuple_n(1), b"\x86": _tuple_n(2), b"\x87": _tuple_n(3),
    b"}": lambda m: m.stack.append({}), b"]": lambda m: m.stack.append([]),
    b"d": _dict_from_mark, b"l": _list_from_mark,
    b"s": _setitem, b"u": _setitems, b"a": _append, b"e": _appends,
    b"q": _put("<B"), b"r": _put("<I"), b"\x94": _memoize,
    b"h": lambda m: m.stack.append(m.get(m.unpack("<B"))), b"j": lambda m: m.stack.append(m.get(m.unpack("<I"))),
    b"c": _global, b"\x93": _stack_global, b"Q": _binpersid, b"R": _reduce, b"b": _build,
}
_NAMES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}


def check_tree(obj, leaf_types: tuple) -> None:
  """Raises PickleFormatError unless ``obj`` is an acyclic tree of dict / list / tuple (shared
  sub-containers allowed, each walked once) at most MAX_NESTING deep, with str / int keys and leaves of
  ``leaf_types`` or plain scalars. Walks iteratively: a hostile depth cannot exhaust the C stack."""
  done: set[int] = set()
  on_path: set[int] = set()
  todo = [(obj, 0, False)]
  while todo:
    node, depth, leaving = todo.pop()
    if leaving:
      on_path.discard(id(node))
      done.add(id(node))
      continue
    if isinstance(node, (dict, list, tuple)):
      if id(node) in on_path:
        raise PickleFormatError("the pickle holds a container that contains itself")
      if id(node) in done:
        continue
      if depth >= MAX_NESTING:
        raise PickleFormatError(f"containers nested deeper than {MAX_NESTING}")
      on_path.add(id(node))
      todo.append((node, depth, True))
      if isinstance(node, dict):
        if any(type(k) not in _KEY_TYPES for k in node):
          raise PickleFormatError("a dict key that is not a str or int")
        children = node.values()
      else:
        children = node
      todo.extend((child, depth + 1, False) for child in children)
    elif not isinstance(node, _SCALARS + tuple(leaf_types)):
      raise PickleFormatError(f"an object of type {type(node).__name__} where data was expected")


def load(data: bytes, *, allowed: Mapping[tuple[str, str], Any], persistent_load: Callable[[Any], Any],
         reduce: Callable[[Any, tuple], Any], build: Callable[[Any, Any], None], leaf_types: tuple = (),
         start: int = 0) -> tuple[Any, int]:
  """The object pickled in ``data`` from offset ``start``, built without importing or calling anything
  but the hooks, and the offset just after its STOP (files may hold several pickles in a row).

  Arguments:
    allowed: ``(module, name) -> stand-in`` for GLOBAL / STACK_GLOBAL; any other global is refused.
    persistent_load: called with each BINPERSID id; returns the object to push.
    reduce: ``reduce(func, args)`` for REDUCE (``func`` is whatever the stack held: the hook must check it).
    build: ``build(obj, state)`` for BUILD; must refuse what it does not expect.
    leaf_types: types the result may hold besides containers and scalars.

  Raises:
    UnsafePickleError: a refused global or opcode (nothing was imported).
    PickleFormatError: malformed, truncated, cyclic or too deeply nested data.
  """
  machine = _Machine(data, allowed, persistent_load, reduce, build)
  machine.pos = start
  result = machine.run()
  check_tree(result, leaf_types)
  return result, machine.pos
