"""The one way to load a config file: a Python module whose ``get_config()`` returns a ConfigDict.

Config files are code (they are imported); data files never are. ``main.py`` loads ``--config`` through
absl's ``config_flags`` (which imports the file the same way and adds command-line overrides); every other
reader (a classifier's config for guidance, the tools, the benchmarks) calls ``load_config_file``.
"""

from __future__ import annotations

import importlib.util
import os


def load_config_file(path: str, where: str = "config"):
  """The ConfigDict of the config file at ``path`` (its ``get_config()``).

  Raises:
    ValueError: no such file, or a module without ``get_config`` (the message names ``where`` and the path).
  """
  spec = importlib.util.spec_from_file_location("_loaded_config", path) if os.path.isfile(path) else None
  if spec is None:
    raise ValueError(f"{where}={path!r}: no such config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{where}={path!r} has no get_config()")
  return module.get_config()
