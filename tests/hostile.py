"""Hostile checkpoint files, built without torch, and the child process that feeds them to the readers.

This module is the index: it re-exports the names the tests use from the modules that hold them, lists
the case classes (``CLASSES``) and is the child's entry point.

Builders (no project imports, so a test can build files without loading the code under test):
  * ``tests.hostile_pickle``: ``Pickle`` emits pickle opcodes one by one; ``pickle_bytes`` turns a tree
    of Python values and nodes (``Global``, ``Reduce``, ``Build``, ``Pid``, ``ODict``, ``Tensor``,
    ``Raw``) into a pickle the way torch.save writes one (protocol 2, ``torch._utils._rebuild_tensor_v2``,
    persistent ids ``('storage', torch.FloatStorage, key, 'cpu', numel)``, OrderedDict + BUILD of
    ``_metadata``);
  * ``tests.hostile_pth``: ``zip_bytes`` writes a zip archive with every header field under control
    (declared sizes, CRC, flags, method, duplicate names); ``write_pth`` lays out torch's archive
    (``<prefix>/data.pkl``, ``<prefix>/data/<key>``, ``<prefix>/byteorder``, ``<prefix>/version``);
    ``read_fixture``: a trusted reader of the committed valid .pth fixtures (it only ever sees those
    files) giving the tree to rebuild them from and the expected tensor tables;
  * ``tests.hostile_msgpack``: ``ndarray_ext`` / ``msgpack_bytes`` write score_sde's flax msgpack State;
    ``read_msgpack_fixture`` reads the committed valid one (trusted);
  * ``CLASSES``: the hostile cases of each class of issue 22 item 6, written into a directory
    (``tests.hostile_cases``: the case model, the positive controls and the msgpack cases;
    ``tests.hostile_pth_cases``: the .pth classes);
  * ``tests.hostile_fuzz``: ``mutant``, the seeded fuzzer's mutation of a fixture's bytes
    (deterministic in its arguments).

Child (``tests.hostile_child``): ``python -m tests.hostile SPEC.json`` imports the entry points, caps its
address space at its size after the imports plus ``limit_bytes``, and runs each task of the spec,
printing a protocol line when a task starts and a JSON result when it ends, so the parent names the
task a crash or hang happened in (see tests/test_hostile_files.py).
"""

import sys

from tests.hostile_cases import (  # noqa: F401
    CKPT_ENTRIES, EITHER, ERROR, OK, PTH_ENTRIES, Case, Context, msgpack_cases, positive)
from tests.hostile_child import TAG, child_main, run_task  # noqa: F401
from tests.hostile_fuzz import msgpack_structure, mutant, pickle_region  # noqa: F401
from tests.hostile_msgpack import (  # noqa: F401
    flatten, msgpack_bytes, msgpack_table, ndarray_ext, read_msgpack_fixture, read_msgpack_fixture_bytes)
from tests.hostile_pickle import (  # noqa: F401
    STORAGE_DTYPE, STORAGE_ITEMSIZE, Build, Global, ODict, Pickle, Pid, Raw, Reduce, Tensor, deep_dict, deep_list,
    deep_tuple, emit, nested_memo_dict, nested_memo_list, pickle_bytes)
from tests.hostile_pth import (  # noqa: F401
    Fixture, Member, deflate, deflated_zeros, digest, fixture_table, read_fixture, replace, torch_members, write,
    write_pth, zip_bytes)
from tests.hostile_pth_cases import bombs, code_execution, cross_file, malformed, out_of_bounds

CLASSES = {"positive": positive, "out_of_bounds": out_of_bounds, "bombs": bombs, "cross_file": cross_file,
           "code_execution": code_execution, "malformed": malformed, "msgpack": msgpack_cases}


if __name__ == "__main__":
  child_main(sys.argv[1])
