"""Reading files we did not write: the one exception type for a bad checkpoint, and file checks.

Checkpoints, weights, run directories and image folders come from other people; every reader of them
treats their contents as hostile (README "Security").
"""

from __future__ import annotations

import os
import pickle
import stat


class CheckpointError(ValueError):
  """A checkpoint (or weights) file is malformed, inconsistent or hostile. The message starts with the
  file's path and says what is wrong in one line; nothing from the file was executed."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
  """The pickle asks for a global or an operation outside the allow-list (it could run code)."""


def check_regular_file(path: str, what: str = "checkpoint") -> None:
  """Raises FileNotFoundError when nothing is at ``path`` and CheckpointError when it is not a regular
  file (a FIFO would block the reader forever, a device never ends); neither is opened."""
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise FileNotFoundError(f"no {what} file at {path}") from None
  if not stat.S_ISREG(mode):
    raise CheckpointError(f"{path}: not a regular file")


def read_npz(path: str, max_bytes: int) -> dict:
  """{name: array} of an ``.npz`` we did not write (a workdir's caches, weights): a regular file, no
  pickled objects, at most ``max_bytes`` of arrays as the zip declares them (checked before reading;
  numpy then reads no member beyond its declared size).

  Raises:
    FileNotFoundError: nothing at ``path``. CheckpointError: anything else wrong, naming ``path``.
  """
  import zipfile
  import zlib

  import numpy as np

  check_regular_file(path, "array")
  try:
    with zipfile.ZipFile(path) as archive:
      declared = sum(info.file_size for info in archive.infolist())
      if declared > max_bytes:
        raise CheckpointError(f"{path}: arrays of {declared} bytes (at most {max_bytes} expected)")
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
  except CheckpointError:
    raise
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
          RuntimeError) as e:
    raise CheckpointError(f"{path}: not a readable .npz of arrays ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:160]})") from None


def read_bounded(path: str, max_bytes: int) -> bytes:
  """The bytes of the regular file ``path``, refused (CheckpointError) above ``max_bytes`` before any is
  read: the size is taken from the open file, so memory follows the file, not the cap."""
  check_regular_file(path)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
      raise CheckpointError(f"{path}: {size} bytes, more than the {max_bytes} a checkpoint may have")
    data = f.read(size + 1)
  if len(data) != size:
    raise CheckpointError(f"{path}: changed size while being read")
  return data
