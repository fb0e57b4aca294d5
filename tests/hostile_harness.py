"""The harness of the hostile-file tests (tests/test_hostile_files.py, test_hostile_cli.py,
test_hostile_fuzz.py): their environment (``Env``, the ``env`` fixture), the child processes that read
the files (``run_child``) and what the children may not touch (``_outside_writes``).

Each class runs in one child process (``python -m tests.hostile``, see tests/hostile.py) that imports
the entry points, then caps its address space at its size plus 1 GiB and reads each case, timing it.
The child prints a line when a task starts and its result when it ends, so a crash or a hang is
attributed to the task that was running; the rest are rerun in a fresh child. The child runs on a copy
of the code (``HOSTILE_CODE_ROOT``, default this checkout: set it to an exported older tree to test
that), with HOME, TMPDIR and XDG_CACHE_HOME in its own workdir and its working directory there; after
it, everything else under the test's temporary root (code copy, case files, marker directory) must be
unchanged, and no marker file may exist: every code-execution payload would create one.

Against an older tree: ``git archive <commit> | tar -x -C DIR`` and ``HOSTILE_CODE_ROOT=DIR``.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests import hostile as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "reference", "data")
CODE_ROOT = os.environ.get("HOSTILE_CODE_ROOT", ROOT)
FIXTURE = os.path.join(DATA, "pytorch_r_ncsnpp_residual.pth")
MSGPACK_FIXTURE = os.path.join(DATA, "jax_r_ncsnpp_residual_checkpoint_1")
LIMIT_BYTES = 1 << 30
TIME_LIMIT = 2.0
PACKAGES = ("models", "evaluation", "configs", "training", "sde_lib", "samplers", "data_lib", "schema", "tools", "safeio")
PWN_MODULE = "pwnmod_hostile"

# The reduced NCSN++ of pytorch_r_ncsnpp_residual.pth (fir=False) and of jax_r_ncsnpp_residual_checkpoint_1
# (fir=True): their reference configs as tests/test_published.py's config_from_reference turns them
# into ours, self-contained for the child.
REDUCED_CONFIG = '''
import ml_collections
from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.update(sde="vesde", continuous=True)
  config.data.update(image_size=16, num_channels=3, centered=False)
  config.model = ml_collections.ConfigDict(dict(
      name="ncsnpp", sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0, num_scales=1000,
      scale_by_sigma=True, ema_rate=0.999, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
      dropout=0.1, resamp_with_conv=True, fir=FIR, fir_kernel=(1, 3, 3, 1), resblock_type="biggan",
      progressive="residual", progressive_input="residual", progressive_combine="sum", embedding_type="fourier",
      fourier_scale=16.0, conditional=True, num_classes=0, skip_rescale=True, init_scale=0.0, nonlinearity="swish"))
  return config
'''


# ------------------------------------------------------------------------------------------ environment
class Env:
  """The test's temporary root: a copy of the code, the case files, the marker directory, the configs."""

  def __init__(self, root):
    self.root = str(root)
    self.code = os.path.join(self.root, "code")
    for name in PACKAGES:
      shutil.copytree(os.path.join(CODE_ROOT, name), os.path.join(self.code, name),
                      ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(CODE_ROOT, "main.py"), self.code)
    os.makedirs(os.path.join(self.code, "tests"))
    hostile = sorted(n for n in os.listdir(os.path.join(ROOT, "tests")) if n.startswith("hostile_")
                     and n.endswith(".py"))
    for name in ("__init__.py", "hostile.py", *hostile):   # the child side always comes from this checkout
      shutil.copy(os.path.join(ROOT, "tests", name), os.path.join(self.code, "tests", name))
    self.markers = os.path.join(self.root, "markers")
    self.pwn = os.path.join(self.root, "pwnpath")
    self.cases = os.path.join(self.root, "cases")
    for d in (self.markers, self.pwn, self.cases):
      os.makedirs(d)
    with open(os.path.join(self.pwn, PWN_MODULE + ".py"), "w") as f:     # importing it leaves a marker
      f.write(f"open({os.path.join(self.markers, 'imported_' + PWN_MODULE)!r}, 'w').close()\nrun = print\n")
    self.configs = {"cifar10": os.path.join(self.code, "configs", "ve", "cifar10.py"),
                    "reduced": os.path.join(self.root, "reduced_config.py"),
                    "reduced_jax": os.path.join(self.root, "reduced_jax_config.py")}
    for name, fir in (("reduced", False), ("reduced_jax", True)):
      with open(self.configs[name], "w") as f:
        f.write(REDUCED_CONFIG.replace("fir=FIR", f"fir={fir}"))
    self.fixture = H.read_fixture(FIXTURE)
    self.ctx = H.Context(self.cases, self.fixture, MSGPACK_FIXTURE, self.markers, PWN_MODULE)
    self.runs = 0

  def snapshot(self, exclude: str) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(self.root):
      if os.path.abspath(dirpath) == os.path.abspath(exclude):
        dirnames[:] = []
        continue
      for name in filenames + dirnames:
        p = os.path.join(dirpath, name)
        if os.path.abspath(p) == os.path.abspath(exclude):
          continue
        st = os.lstat(p)
        out[os.path.relpath(p, self.root)] = (st.st_size, st.st_mtime_ns) if not os.path.isdir(p) else "dir"
    return out

  def child_env(self, workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JAX_COMPILATION_CACHE", "XDG_"))}
    env.update(HOME=workdir, TMPDIR=os.path.join(workdir, "tmp"), XDG_CACHE_HOME=os.path.join(workdir, "cache"),
               PYTHONPATH=os.pathsep.join([self.code, self.pwn]), PYTHONDONTWRITEBYTECODE="1", JAX_PLATFORMS="cpu")
    os.makedirs(env["TMPDIR"], exist_ok=True)
    return env

  def new_workdir(self, name):
    self.runs += 1
    workdir = os.path.join(self.root, f"work_{self.runs}_{name}")
    os.makedirs(workdir)
    return workdir


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return Env(tmp_path_factory.mktemp("hostile"))


def _git_status():
  out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                       text=True)
  return set(out.stdout.splitlines())


def _outside_writes(env, workdir, before, git_before):
  """What the child changed outside its workdir: files under the test root, markers, our names in the repo."""
  after = env.snapshot(workdir)
  changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
  ours = [line for line in _git_status() - git_before
          if any(s in line for s in ("pwn", "marker", "cli_", "checkpoints"))]
  return changed + [f"repo: {line}" for line in ours] + [f"marker: {m}" for m in os.listdir(env.markers)]


# --------------------------------------------------------------------------------------------- the child
def run_child(env, tasks, name, *, startup_timeout=120.0, task_timeout=10.0):
  """{task id: result} for each task, run in child processes; a task whose child died or hung while it
  ran gets outcome 'crash' / 'hang' (and the remaining tasks go to a fresh child)."""
  results, pending, outside = {}, list(tasks), []
  while pending:
    workdir = env.new_workdir(name)
    for t in pending:
      if t["entry"] in ("cli", "fuzz"):
        where = os.path.join(workdir, t["task"].replace("/", "_").replace(":", "_"))
        t["workdir" if t["entry"] == "cli" else "path"] = where
    spec = {"tasks": pending, "configs": env.configs, "limit_bytes": LIMIT_BYTES}
    spec_path = os.path.join(env.root, f"spec_{env.runs}.json")
    with open(spec_path, "w") as f:
      json.dump(spec, f)
    before, git_before = env.snapshot(workdir), _git_status()
    stderr = open(os.path.join(workdir, "stderr.txt"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "tests.hostile", spec_path], cwd=workdir, env=env.child_env(workdir),
                            stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    current, ready, buffer, ended = None, False, b"", False
    deadline = time.monotonic() + startup_timeout
    while not ended:
      timeout = deadline - time.monotonic()
      readable = select.select([proc.stdout], [], [], max(timeout, 0))[0] if timeout > 0 else []
      if not readable:                                 # hung: kill the child's process group
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if current is None:
          raise AssertionError(f"child did not start: {_tail(stderr)}")
        results[current] = {"outcome": "hang", "after": task_timeout}
        break
      chunk = os.read(proc.stdout.fileno(), 1 << 16)
      if not chunk:
        ended = True
        break
      buffer += chunk
      *lines, buffer = buffer.split(b"\n")
      for line in lines:
        if not line.startswith(H.TAG.encode()):
          continue
        msg = json.loads(line[len(H.TAG):])
        if "ready" in msg:
          ready = True
        elif "start" in msg:
          current = msg["start"]
        elif "end" in msg:
          results[msg["end"]["task"]] = msg["end"]
          current = None
        deadline = time.monotonic() + task_timeout
    if ended:
      code = proc.wait()
      if not ready:
        raise AssertionError(f"child did not start (exit {code}): {_tail(stderr)}")
      if current is not None:
        results[current] = {"outcome": "crash", "returncode": code, "stderr": _tail(stderr)}
    stderr.close()
    outside += _outside_writes(env, workdir, before, git_before)
    pending = [t for t in pending if t["task"] not in results]
  return results, outside


def _tail(f, n=1500):
  f.flush()
  f.seek(0)
  return f.read()[-n:]


def tasks_for(cases):
  tasks = []
  for case in cases:
    for entry in case.expect:
      tasks.append({"task": f"{case.id}:{entry}", "entry": entry, "path": case.path, "config": case.config,
                    "check": case.check, "clean": case.clean})
  return tasks


def _diff(a, b):
  if isinstance(a, dict) and isinstance(b, dict):
    keys = sorted(set(a) | set(b), key=str)
    diffs = [f"{k}: {str(a.get(k))[:120]} != {str(b.get(k))[:120]}" for k in keys if a.get(k) != b.get(k)]
    return f"{len(diffs)} differ; " + "; ".join(diffs[:3])
  return f"{str(a)[:200]} != {str(b)[:200]}"
