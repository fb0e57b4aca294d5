"""The error of a data set that is not on disk, raised by the tensorflow-datasets sources
(``data_lib.standard``) and by your own data (``data_lib.own_data``: a data.path that does not exist)."""


class DatasetNotFoundError(RuntimeError):
  """A data set that is not on disk; the message names it, the directory and the remedy."""
