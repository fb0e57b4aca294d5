"""Bounded readers of files from other people: no pickle, no code execution, every size checked first.

``untrusted``: ``CheckpointError``, ``check_regular_file``, ``read_bounded``, ``read_npz``; ``safe_pickle``: a
data-only pickle opcode machine; ``torch_pickle``: torch ``.pth`` files (zip and legacy formats) without
torch; ``flax_msgpack``: flax msgpack checkpoints. Imports nothing of the project, so networks (porting),
data, metrics and the running layer can all use it.
"""

from safeio.untrusted import CheckpointError, UnsafePickleError, check_regular_file, read_bounded, read_npz

__all__ = ["CheckpointError", "UnsafePickleError", "check_regular_file", "read_bounded", "read_npz"]
