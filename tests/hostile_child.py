"""The child side: ``python -m tests.hostile SPEC.json`` runs ``child_main``, which imports the entry
points, caps its address space at its size after the imports plus ``limit_bytes``, and runs each task
of the spec, printing a protocol line (prefix ``TAG``) when a task starts and a JSON result when it
ends, so the parent names the task a crash or hang happened in (see tests/test_hostile_files.py)."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np

from tests.hostile_fuzz import mutant
from tests.hostile_pth import digest

TAG = "@@hostile@@ "                    # prefix of the child's protocol lines on stdout


def _vm_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmSize:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no VmSize")


def _maxrss() -> int:
  import resource

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(field)


class PeakRSS:
  """Peak resident memory during a block, over the resident memory at its start (the kernel's
  high-water mark is reset first through /proc/self/clear_refs; without it, ru_maxrss's growth)."""

  def __enter__(self):
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      self.reset = True
    except OSError:
      self.reset = False
    self.start = _status("VmRSS") if self.reset else _maxrss()
    return self

  def __exit__(self, *exc):
    self.growth = (_status("VmHWM") if self.reset else _maxrss()) - self.start


def raw_table(obj) -> dict:
  """load_pth's result in fixture_table's format (without walking anything but model / ema / step)."""
  if not isinstance(obj, dict):
    return {"type": type(obj).__name__}
  step = obj.get("step")
  out: dict = {"step": repr(step)[:100] if isinstance(step, (int, float, str, type(None))) else type(step).__name__}
  model = obj.get("model")
  out["model"] = ({k if isinstance(k, str) else repr(k): digest(v) for k, v in model.items()}
                  if isinstance(model, dict) else type(model).__name__)
  ema = obj.get("ema")
  shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
  listed = isinstance(shadow, list) and len(shadow) < 100_000
  out["shadow"] = [digest(v) for v in shadow] if listed else type(shadow).__name__
  return out


def _flat(tree, prefix="", out=None, depth=0):
  out = {} if out is None else out
  if depth > 64 or len(out) > 100_000:
    out[prefix + "..."] = "too deep"
    return out
  for k, v in tree.items():
    name = f"{prefix}{k if isinstance(k, str) else repr(k)}"
    if isinstance(v, dict):
      _flat(v, name + "/", out, depth + 1)
    else:
      out[name] = v
  return out


def checkpoint_table(ck) -> dict:
  """read_checkpoint's result: digests, plus the violations of its documented contract."""
  import models

  problems = []
  if ck.format not in models.FORMATS:
    problems.append(f"format {ck.format!r}")
  if type(ck.step) is not int or not 0 <= ck.step < 2**31:
    problems.append(f"step {ck.step!r} ({type(ck.step).__name__})")
  tables = {}
  for field in ("params", "ema_params"):
    tree = getattr(ck, field)
    if tree is None and field == "ema_params":
      tables[field] = None
      continue
    if not isinstance(tree, dict):
      problems.append(f"{field} is a {type(tree).__name__}")
      continue
    flat = _flat(tree)
    for k, v in flat.items():
      if not isinstance(v, np.ndarray) or not np.issubdtype(v.dtype, np.floating) and v.dtype.name != "bfloat16":
        problems.append(f"{field}[{k}] is {type(v).__name__} {getattr(v, 'dtype', '')}")
        break
    for k in _key_paths(tree):
      if not isinstance(k, str):
        problems.append(f"{field} has the key {k!r}")
        break
    tables[field] = {k: digest(v) for k, v in flat.items()}
  return {"format": ck.format, "step": repr(ck.step), "params": tables.get("params"), "ema": tables.get("ema_params"),
          "problems": problems}


def _key_paths(tree, depth=0):
  for k, v in tree.items():
    yield k
    if isinstance(v, dict) and depth < 64:
      yield from _key_paths(v, depth + 1)


def _check(kind: str, result, before_rss: int) -> list[str]:
  problems = []
  if kind == "shared":
    model = result.get("model") if isinstance(result, dict) else getattr(result, "params", None)
    arrays = list(model.values()) if isinstance(model, dict) else []
    if len(arrays) != 2048:
      problems.append(f"{len(arrays)} tensors")
    elif any(a.flags.writeable for a in arrays):
      problems.append("writeable arrays")
    elif not all(np.may_share_memory(a, arrays[0]) for a in arrays):
      problems.append("tensors copied, not views of their storage")
    if _maxrss() - before_rss > 256 << 20:
      problems.append(f"peak memory grew by {(_maxrss() - before_rss) >> 20} MiB")
  return problems


def _run_entry(task: dict, entry: str, path: str):
  import contextlib

  import models
  from safeio import torch_pickle

  if entry == "load_pth":
    return torch_pickle.load_pth(path)
  if entry == "read_checkpoint":
    return models.read_checkpoint(path)
  if entry == "load_score_sde":
    return models.load_score_sde_checkpoint(path, task["_config"])
  if entry == "inception":
    from evaluation import inception
    return inception.read_state_dict(path)
  if entry == "cli":
    from tools import convert_checkpoint
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      rc = convert_checkpoint.main([path, "--config", task["config_path"], "--workdir", task["workdir"]])
    return {"rc": rc, "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()[-2000:],
            "workdir_exists": os.path.exists(task["workdir"])}
  raise ValueError(entry)


def _classify(e: BaseException, path: str) -> dict:
  import traceback

  try:
    import models
    ce = getattr(models, "CheckpointError", None)
  except Exception:  # noqa: BLE001
    ce = None
  msg = str(e)
  return {"outcome": "raised", "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
          "checkpoint_error": bool(ce is not None and isinstance(e, ce)), "starts_with_path": msg.startswith(path),
          "message": msg[:400], "traceback": "".join(traceback.format_exception(e)[-3:])[-1500:]}


def run_task(task: dict) -> dict:
  import resource

  entry, path = task["entry"], task["path"]
  if entry == "fuzz":
    return _run_fuzz(task)
  before_rss = _maxrss()
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  with PeakRSS() as peak:
    t0 = time.perf_counter()
    try:
      result = _run_entry(task, entry, path)
      out = {"outcome": "ok"}
    except BaseException as e:  # noqa: BLE001 -- every outcome is reported, the parent judges
      result, out = None, _classify(e, path)
    wall = time.perf_counter() - t0
  cpu1 = resource.getrusage(resource.RUSAGE_SELF)
  out.update(wall=wall, cpu=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
             rss_growth=peak.growth)
  if out["outcome"] == "ok":
    try:
      if entry == "load_pth":
        out["table"] = raw_table(result if task.get("check") != "state_dict" else {"model": result})
      elif entry == "read_checkpoint":
        out["table"] = checkpoint_table(result)
      elif entry == "cli":
        out["cli"] = result
      elif entry == "inception":
        out["table"] = ({"model": {k: digest(v) for k, v in result.items()}} if isinstance(result, dict)
                        else {"type": type(result).__name__})
      if task.get("check"):
        out["check_problems"] = _check(task["check"], result, before_rss)
    except BaseException as e:  # noqa: BLE001
      out["summary_error"] = f"{type(e).__name__}: {e}"[:400]
  del result
  if task.get("clean"):
    import models
    from safeio import torch_pickle
    out["clean"] = []
    for clean in task["clean"]:
      try:
        out["clean"].append({"raw": raw_table(torch_pickle.load_pth(clean)),
                             "checkpoint": checkpoint_table(models.read_checkpoint(clean))})
      except BaseException as e:  # noqa: BLE001
        out["clean"].append({"error": f"{type(e).__name__}: {e}"[:400]})
  return out


def _run_fuzz(task: dict) -> dict:
  import resource

  import models

  data, how = mutant(task["fixture"], task["mode"], task["seed"], task["index"])
  path = task["path"]
  with open(path, "wb") as f:
    f.write(data)
  cpu0 = resource.getrusage(resource.RUSAGE_SELF)
  with PeakRSS() as peak:
    t0 = time.perf_counter()
    try:
      ck, out = models.read_checkpoint(path), {"outcome": "ok"}
    except BaseException as e:  # noqa: BLE001
      ck, out = None, _classify(e, path)
    wall = time.perf_counter() - t0
  cpu1 = resource.getrusage(resource.RUSAGE_SELF)
  if ck is not None:
    out["table"] = checkpoint_table(ck)
  out.update(wall=wall, cpu=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
             rss_growth=peak.growth, mutation=how)
  return out


BASE: dict = {}


def child_main(spec_path: str) -> None:
  import copyreg
  import resource

  with open(spec_path) as f:
    spec = json.load(f)
  import jax
  import jax.numpy as jnp

  import evaluation.inception  # noqa: F401
  import models
  import schema
  import tools.convert_checkpoint  # noqa: F401
  from safeio import torch_pickle  # noqa: F401

  jax.jit(lambda x: x + 1)(jnp.zeros(3)).block_until_ready()          # the backend and its threads exist
  configs = {name: schema.load_config_file(p, "--config") for name, p in spec["configs"].items()}
  # An extension registry that names dangerous globals: EXT1/2/4 must still go through the allow-list.
  for module, name, code in (("os", "system", 0xF0), ("posix", "system", 0x1234), ("subprocess", "Popen", 0x12345678)):
    copyreg.add_extension(module, name, code)
  if spec.get("limit_bytes"):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + int(spec["limit_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  BASE["rss"] = _maxrss()
  print(TAG + json.dumps({"ready": True, "vm": _vm_bytes(), "rss": BASE["rss"]}), flush=True)
  for task in spec["tasks"]:
    print(TAG + json.dumps({"start": task["task"]}), flush=True)
    task["_config"] = configs.get(task.get("config", ""))
    if task.get("config") in spec["configs"]:
      task["config_path"] = spec["configs"][task["config"]]
    result = run_task(task)
    result["task"] = task["task"]
    print(TAG + json.dumps({"end": result}, default=repr), flush=True)
