"""The hostile .pth cases of issue 22 item 6, each class a function of a ``Context`` writing its files:
out-of-bounds tensors (class 1), memory and CPU bombs (2), BUILD on the readers' stand-ins (3), code
execution (4) and malformed archives and trees (5)."""

from __future__ import annotations

import dataclasses
import pickle
import random
import struct
import zipfile
import zlib

import numpy as np

from tests.hostile_cases import CKPT_ENTRIES, EITHER, OK, PTH_ENTRIES, Case, Context, _expect, _first_tensor
from tests.hostile_pickle import (STORAGE_ITEMSIZE, Build, Global, ODict, Pid, Raw, Reduce, Tensor, deep_dict,
                                  deep_list, deep_tuple, emit, nested_memo_dict, nested_memo_list, pickle_bytes)
from tests.hostile_pth import Member, deflated_zeros, replace, torch_members, write, write_pth, zip_bytes


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
