"""The hostile cases' model (``Case``, ``Context``, what each entry point must do), the positive controls
(valid files the readers must read exactly) and the flax msgpack cases; the .pth cases are in
``tests.hostile_pth_cases`` and ``tests.hostile.CLASSES`` lists them all."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tests.hostile_msgpack import _to_msgpack_tree, flatten, msgpack_bytes, ndarray_ext, read_msgpack_fixture
from tests.hostile_pickle import ODict, Tensor
from tests.hostile_pth import Fixture, digest, write, write_pth

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
