"""The seeded fuzzer: ``mutant`` mutates a valid fixture's bytes (deterministic in its arguments), inside a
.pth's data.pkl member (re-zipped with valid CRCs or not) or a flax msgpack file's keys and array heads."""

from __future__ import annotations

import io
import pickletools
import random
import struct
import zipfile

import numpy as np

from tests.hostile_msgpack import read_msgpack_fixture_bytes
from tests.hostile_pth import read_fixture, zip_bytes


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
