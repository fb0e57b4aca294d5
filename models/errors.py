"""The one exception type for a checkpoint file that cannot be trusted or read."""

from __future__ import annotations

import pickle


class CheckpointError(ValueError):
  """A checkpoint (or weights) file is malformed, inconsistent or hostile. The message starts with the
  file's path and says what is wrong in one line; nothing from the file was executed."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
  """The pickle asks for a global or an operation outside the allow-list (it could run code)."""
