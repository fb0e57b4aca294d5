"""Hostile checkpoint files (issue 22, item 6): every class of attack, through every public entry point,
in child processes under a memory and a time limit, plus a seeded mutation fuzzer over the valid fixtures.

Each class runs in one child process (``python -m tests.hostile``, see tests/hostile.py) that imports
the entry points, then caps its address space at its size plus 1 GiB and reads each case, timing it.
The child prints a line when a task starts and its result when it ends, so a crash or a hang is
attributed to the task that was running; the rest are rerun in a fresh child. The child runs on a copy
of the code (``HOSTILE_CODE_ROOT``, default this checkout: set it to an exported older tree to test
that), with HOME, TMPDIR and XDG_CACHE_HOME in its own workdir and its working directory there; after
it, everything else under the test's temporary root (code copy, case files, marker directory) must be
unchanged, and no marker file may exist: every code-execution payload would create one.

What each entry point must do with a hostile file (``tests/hostile.py`` lists the cases):
  * ``models.torch_pickle.load_pth``, ``models.read_checkpoint``, ``models.load_score_sde_checkpoint``,
    ``evaluation.inception.read_state_dict``: raise ``models.CheckpointError`` whose message starts
    with the file's path (a ValueError), within 2 s and 1 GiB;
  * ``python -m models.convert`` (run in-process through ``models.convert.main``; a few in real
    processes below): exit 2 with exactly one line on stderr starting with ``error:``, nothing on
    stdout, and no workdir created;
  * cases marked ``ok`` / ``either`` are valid or harmless files that may (must) be read: then the
    result must be exactly the expected tensor table, and ``read_checkpoint``'s documented contract
    (step in [0, 2**31), str keys, floating arrays) must hold.
A flax msgpack file has no checksum, so a flipped byte in a parameter's name reads as another valid
name; these tests require what catches it: a score_sde State whose raw (``optimizer.target``) and EMA
(``params_ema``) trees differ in names, shapes or dtypes is refused (the ``mp_*_differs`` cases and the
msgpack fuzzer, whose mutations go mostly to keys and array headers).

Against an older tree: ``git archive <commit> | tar -x -C DIR`` and ``HOSTILE_CODE_ROOT=DIR``; more
fuzzing: ``HOSTILE_FUZZ_SEED`` and ``HOSTILE_FUZZ_N`` (mutants per fixture and mode, default 100).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import hostile as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "reference", "data")
CODE_ROOT = os.environ.get("HOSTILE_CODE_ROOT", ROOT)
FIXTURE = os.path.join(DATA, "pytorch_r_ncsnpp_residual.pth")
MSGPACK_FIXTURE = os.path.join(DATA, "jax_r_ncsnpp_residual_checkpoint_1")
LIMIT_BYTES = 1 << 30
TIME_LIMIT = 2.0
PACKAGES = ("models", "evaluation", "configs", "training", "sde_lib", "samplers", "datasets")
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
    for name in ("__init__.py", "hostile.py"):             # the child side always comes from this checkout
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


# --------------------------------------------------------------------------------------------- judging
def _strip(table):
  return {k[len("module."):] if k.startswith("module.") else k: v for k, v in table.items()}


def _raised_right(res, path):
  if res.get("outcome") != "raised":
    return None
  if not res["checkpoint_error"]:
    return f"raised {res['type']} (mro {res['mro'][:4]}), not CheckpointError: {res['message'][:200]!r}"
  if not res["starts_with_path"]:
    return f"CheckpointError whose message does not start with the path: {res['message'][:200]!r}"
  return ""


def judge(env, case, entry, res, fixture_table) -> list[str]:
  """The problems with one task's result (empty when it did what the contract says)."""
  expect = case.expect[entry]
  outcome = res.get("outcome")
  if outcome in ("crash", "hang"):
    return [f"{outcome}: {json.dumps(res)[:600]}"]
  problems = []
  converted = entry == "load_score_sde" and outcome == "ok" or entry == "cli" and (res.get("cli") or {}).get("rc") == 0
  if res["wall"] >= TIME_LIMIT and not converted:     # (converting a valid file builds the network: not a read)
    problems.append(f"took {res['wall']:.2f} s (cpu {res['cpu']:.2f} s)")
  if res["rss_growth"] >= LIMIT_BYTES:
    problems.append(f"peak RSS grew by {res['rss_growth'] >> 20} MiB")
  if res.get("summary_error"):
    problems.append(f"result could not be summarised: {res['summary_error']}")
  if entry == "cli":
    if outcome != "ok":
      return problems + [f"the CLI raised {res['type']}: {res['message'][:200]!r} (a traceback for the user)"]
    cli = res["cli"]
    lines = cli["stderr"].strip().splitlines()
    failed = cli["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error:") and not cli["stdout"]
    if failed and cli["workdir_exists"]:
      problems.append("the CLI failed but created the workdir")
    if expect == H.ERROR and not failed:
      problems.append(f"the CLI returned {cli['rc']} with stderr {cli['stderr'][-300:]!r}, "
                      f"stdout {cli['stdout'][:200]!r}")
    if expect == H.EITHER and not failed and cli["rc"] != 0:
      problems.append(f"the CLI returned {cli['rc']} with stderr {cli['stderr'][-300:]!r}")
    return problems
  wrong = _raised_right(res, case.path)
  if wrong:
    problems.append(wrong)
  if outcome == "ok":
    if expect == H.ERROR:
      problems.append(f"accepted (expected CheckpointError): {json.dumps(res.get('table'))[:300]}")
    else:
      problems += _check_ok(env, case, entry, res, fixture_table)
  elif expect == H.OK:
    problems.append("expected to read")
  if case.clean:
    problems += _check_clean(res, fixture_table)
  return problems


def _check_ok(env, case, entry, res, fixture_table):
  problems, table = list(res.get("check_problems") or []), res.get("table") or {}
  if entry == "read_checkpoint" and table.get("problems"):
    problems.append(f"read_checkpoint's contract broken: {table['problems']}")
  if case.check == "fixture":
    if entry == "load_pth" and table != fixture_table:
      problems.append(f"tensor table differs from the fixture's: {_diff(table, fixture_table)}")
    if entry == "read_checkpoint" and table.get("params") != _strip(fixture_table["model"]):
      problems.append(f"params differ from the fixture's: {_diff(table.get('params'), _strip(fixture_table['model']))}")
  if case.check in ("expected", "state_dict") and entry in ("load_pth", "inception"):
    if table.get("model") != case.expected:
      problems.append(f"tensor table differs: {_diff(table.get('model'), case.expected)}")
  if case.check == "expected" and entry == "read_checkpoint" and table.get("params") != _strip(case.expected):
    problems.append(f"params differ: {_diff(table.get('params'), _strip(case.expected))}")
  if case.check == "msgpack_table" and entry == "read_checkpoint":
    want = H.msgpack_table(H.read_msgpack_fixture(MSGPACK_FIXTURE))
    got = {"step": table.get("step"), "params": table.get("params"), "ema": table.get("ema")}
    if got != {**want, "step": repr(want["step"])}:
      problems.append(f"msgpack table differs: {_diff(got, want)}")
  return problems


def _check_clean(res, fixture_table):
  problems = []
  for clean in res.get("clean") or []:
    if "error" in clean:
      problems.append(f"the clean fixture read next failed: {clean['error']}")
    elif clean["raw"] != fixture_table:
      problems.append(f"the clean fixture read next came out changed: {_diff(clean['raw'], fixture_table)}")
    elif clean["checkpoint"]["params"] != _strip(fixture_table["model"]):
      problems.append("the clean fixture's read_checkpoint params came out changed")
  return problems


def _diff(a, b):
  if isinstance(a, dict) and isinstance(b, dict):
    keys = sorted(set(a) | set(b), key=str)
    diffs = [f"{k}: {str(a.get(k))[:120]} != {str(b.get(k))[:120]}" for k in keys if a.get(k) != b.get(k)]
    return f"{len(diffs)} differ; " + "; ".join(diffs[:3])
  return f"{str(a)[:200]} != {str(b)[:200]}"


def run_class(env, name):
  cases = H.CLASSES[name](env.ctx)
  tasks = tasks_for(cases)
  results, outside = run_child(env, tasks, name)
  table = H.fixture_table(env.fixture)
  failures = {}
  for case in cases:
    for entry in case.expect:
      res = results[f"{case.id}:{entry}"]
      problems = judge(env, case, entry, res, table)
      if problems and any(p.startswith("took") for p in problems) and len(problems) == 1:
        # a slow read on a loaded machine: once more in a fresh child before calling it slow
        again, more = run_child(env, [t for t in tasks if t["task"] == f"{case.id}:{entry}"], name + "_retry")
        outside += more
        problems = judge(env, case, entry, again[f"{case.id}:{entry}"], table)
      if problems:
        failures[f"{case.id}:{entry}"] = problems
  poisoned = [t for t, ps in failures.items() if any("clean fixture" in p for p in ps)]
  if poisoned:
    # In one process the first case that changed the next read changes every later one too: name it,
    # then read each case alone in a fresh process to say which of them change the next read by themselves.
    failures["(one process)"] = [f"the clean fixture first came out changed after {poisoned[0]}"]
    for case in cases:
      alone, more = run_child(env, [t for t in tasks if t["task"].startswith(case.id + ":")], name + "_alone")
      outside += more
      for entry in case.expect:
        problems = judge(env, case, entry, alone[f"{case.id}:{entry}"], table)
        if problems:
          failures[f"{case.id}:{entry} (alone)"] = problems
  slowest = max((r.get("wall", 0), k) for k, r in results.items())
  return cases, results, failures, outside, slowest


def _report(name, cases, failures, outside, slowest):
  lines = [f"{name}: {len(failures)} of {sum(len(c.expect) for c in cases)} tasks failed "
           f"(slowest {slowest[1]} {slowest[0]:.2f} s)"]
  for task, problems in sorted(failures.items()):
    lines.append(f"  {task}: " + " | ".join(problems))
  if outside:
    lines.append(f"  written outside the child's workdir: {outside[:10]}")
  return "\n".join(lines)


CLASS_NAMES = ["positive", "out_of_bounds", "bombs", "cross_file", "code_execution", "malformed", "msgpack"]


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_hostile_files_end_with_the_documented_error(env, name):
  """Every case of the class through every entry point: the documented error (or, for valid files,
  exactly the expected tensors), within 2 s and 1 GiB, nothing written outside the child's workdir."""
  cases, results, failures, outside, slowest = run_class(env, name)
  report = _report(name, cases, failures, outside, slowest)
  print(report)
  assert not failures and not outside, report


# --------------------------------------------------------------------------------- the CLI, for real
def _convert(env, checkpoint, workdir_arg, cwd, *extra, config="cifar10", timeout=300):
  return subprocess.run([sys.executable, "-m", "models.convert", checkpoint, "--config", env.configs[config],
                         "--workdir", workdir_arg, *extra], cwd=cwd, env=env.child_env(cwd), capture_output=True,
                        text=True, timeout=timeout)


def _one_line_error(out):
  lines = out.stderr.strip().splitlines()
  return out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and not out.stdout


def test_the_command_line_prints_one_error_line_for_hostile_files(env):
  """``python -m models.convert`` in its own process: exit 2, one ``error:`` line, no workdir, nothing
  run. The step cases use the checkpoint's own network config, so only the step is wrong."""
  fx, ctx = env.fixture, env.ctx
  files = {
      "os_system": (H.write_pth(os.path.join(env.cases, "cli_os_system.pth"),
                                H.replace(fx.tree, ("optimizer",), H.Reduce(H.Global("os", "system"),
                                                                             (ctx.touch("cli_os_system"),))),
                                fx.storages, prefix=fx.prefix.rstrip("/")), "cifar10"),
      "garbage": (H.write(os.path.join(env.cases, "cli_garbage"), b"\x89PNG" + bytes(range(256)) * 8), "cifar10"),
      "step_negative": (fx.write(os.path.join(env.cases, "cli_step_negative.pth"), H.replace(fx.tree, ("step",), -1)),
                        "reduced"),
      "step_2pow31": (fx.write(os.path.join(env.cases, "cli_step_2pow31.pth"), H.replace(fx.tree, ("step",), 2**31)),
                      "reduced"),
      "msgpack_step": (H.write(os.path.join(env.cases, "cli_msgpack_step"),
                               H.msgpack_bytes({**H.read_msgpack_fixture(MSGPACK_FIXTURE),
                                                "step": np.asarray(-5, np.int32)})), "cifar10"),
  }
  failures = []
  for name, (path, config) in files.items():
    workdir = env.new_workdir("cli_" + name)
    before, git_before = env.snapshot(workdir), _git_status()
    out = _convert(env, path, "w", workdir, config=config)
    if not _one_line_error(out):
      failures.append(f"{name}: exit {out.returncode}, stderr {out.stderr[-400:]!r}, stdout {out.stdout[-200:]!r}")
    if os.path.exists(os.path.join(workdir, "w")):
      failures.append(f"{name}: the workdir was created")
    outside = _outside_writes(env, workdir, before, git_before)
    if outside:
      failures.append(f"{name}: wrote outside its workdir: {outside[:5]}")
  assert not failures, "\n".join(failures)


def test_the_converter_refuses_a_workdir_that_holds_checkpoints(env):
  """A workdir whose checkpoints/ is not empty is refused (one line, nothing changed) unless --add."""
  fx = env.fixture
  step3 = fx.write(os.path.join(env.cases, "step3.pth"), H.replace(fx.tree, ("step",), 3))
  cwd = env.new_workdir("refuse")
  first = _convert(env, step3, "w", cwd, config="reduced")
  assert first.returncode == 0, first.stderr[-2000:]
  assert os.listdir(os.path.join(cwd, "w", "checkpoints")) == ["3"]
  snapshot = sorted((p, os.path.getsize(os.path.join(d, p)) if os.path.isfile(os.path.join(d, p)) else -1)
                    for d, _, fs in os.walk(os.path.join(cwd, "w")) for p in fs)
  again = _convert(env, FIXTURE, "w", cwd, config="reduced")
  after = sorted((p, os.path.getsize(os.path.join(d, p)) if os.path.isfile(os.path.join(d, p)) else -1)
                 for d, _, fs in os.walk(os.path.join(cwd, "w")) for p in fs)
  assert _one_line_error(again), (again.returncode, again.stderr[-1500:])
  assert after == snapshot
  added = _convert(env, FIXTURE, "w", cwd, "--add", config="reduced")
  assert added.returncode == 0, added.stderr[-2000:]
  assert sorted(os.listdir(os.path.join(cwd, "w", "checkpoints"))) == ["3", "7"]


# ------------------------------------------------------------------------------------------- the fuzzer
FUZZ_SEED = int(os.environ.get("HOSTILE_FUZZ_SEED", "0"))
FUZZ_N = int(os.environ.get("HOSTILE_FUZZ_N", "100"))
FUZZ_TARGETS = [("pytorch_r_ncsnpp_residual.pth", "raw"), ("pytorch_r_ncsnpp_residual.pth", "pickle"),
                ("pytorch_r_ddpmpp_ddpmblock.pth", "raw"), ("pytorch_r_ddpmpp_ddpmblock.pth", "pickle"),
                ("jax_r_ncsnpp_residual_checkpoint_1", "msgpack"), ("jax_r_ddpmpp_ddpmblock_checkpoint_1", "msgpack")]


def _names_shapes_dtypes(table):
  return {k: v[:2] for k, v in (table or {}).items()}


def judge_mutant(mode, res, want) -> tuple[list[str], str]:
  """(problems, how the table changed if a re-zipped pickle mutant was accepted as another checkpoint)."""
  outcome = res.get("outcome")
  if outcome in ("crash", "hang"):
    return [f"{outcome}: {json.dumps(res)[:400]}"], ""
  problems = []
  if res["wall"] >= TIME_LIMIT:
    problems.append(f"took {res['wall']:.2f} s")
  if res["rss_growth"] >= LIMIT_BYTES:
    problems.append(f"peak RSS grew by {res['rss_growth'] >> 20} MiB")
  if outcome == "raised":
    if not (res["checkpoint_error"] and res["starts_with_path"]):
      problems.append(f"raised {res['type']}: {res['message'][:200]!r}")
    return problems, ""
  table = res["table"]
  same = (table["params"], table["ema"], table["step"]) == (want["params"], want["ema"], want["step"])
  if table["problems"]:
    problems.append(f"accepted, breaking read_checkpoint's contract: {table['problems']}")
  elif mode == "raw" and not same:
    problems.append(f"accepted a changed tensor table: {_diff(table['params'], want['params'])}")
  elif mode == "msgpack":
    got = _names_shapes_dtypes(table["params"]), _names_shapes_dtypes(table["ema"])
    expected = _names_shapes_dtypes(want["params"]), _names_shapes_dtypes(want["ema"])
    if got != expected:
      problems.append(f"accepted changed names/shapes/dtypes: params {_diff(got[0], expected[0])} / "
                      f"ema {_diff(got[1], expected[1])}")
  elif mode == "pickle" and not same:
    return problems, _diff(table["params"], want["params"])
  return problems, ""


@pytest.mark.parametrize("kind", ["pth", "msgpack"])
def test_fuzzed_fixtures_raise_checkpoint_error_or_read_unchanged(env, kind):
  """Seeded mutations of the valid fixtures' bytes (bit flips, byte overwrites, truncations, chunk
  copies and deletions; for .pth mostly inside data.pkl, and also pickle mutations re-zipped with valid
  CRCs so they reach the unpickler). Each mutant raises CheckpointError or reads to the fixture's own
  tensor table: the same names, shapes, dtypes and values for a zip member mutation (the zip's CRC
  covers them), the same names, shapes and dtypes for msgpack (no checksum). A re-zipped pickle
  mutation may be a different valid checkpoint (a changed name or size is undetectable): it must keep
  read_checkpoint's contract, and the count of such acceptances is reported."""
  targets = [(f, m) for f, m in FUZZ_TARGETS if (m == "msgpack") == (kind == "msgpack")]
  tasks = [{"task": f"baseline:{f}", "entry": "read_checkpoint", "path": os.path.join(DATA, f)} for f, _ in targets]
  tasks += [{"task": f"{f}:{m}:{i}", "entry": "fuzz", "fixture": os.path.join(DATA, f), "mode": m, "seed": FUZZ_SEED,
             "index": i} for f, m in targets for i in range(FUZZ_N)]
  t0 = time.monotonic()
  results, outside = run_child(env, tasks, f"fuzz_{kind}")
  elapsed = time.monotonic() - t0
  failures, accepted_changed, counts = [], [], {"raised": 0, "ok": 0}
  for f, m in targets:
    base = results[f"baseline:{f}"]
    assert base["outcome"] == "ok" and not base["table"]["problems"], f"the clean fixture {f} does not read: {base}"
    for i in range(FUZZ_N):
      task = f"{f}:{m}:{i}"
      res = results[task]
      outcome = res.get("outcome")
      if outcome in counts:
        counts[outcome] += 1
      problems, changed = judge_mutant(m, res, base["table"])
      if changed:
        accepted_changed.append(f"{task} ({res['mutation']}): {changed}")
      if problems:
        data, how = H.mutant(os.path.join(DATA, f), m, FUZZ_SEED, i)
        keep = H.write(os.path.join(env.root, f"failing_{f}_{m}_{i}"), data)
        failures.append(f"{task} [{how}; saved as {keep}]: " + " | ".join(problems))
  report = (f"fuzz {kind}: {len(tasks) - len(targets)} mutants in {elapsed:.1f} s, {counts}, "
            f"{len(failures)} failures, {len(accepted_changed)} re-zipped pickle mutants accepted as a different "
            "valid checkpoint" + "".join(f"\n  {x}" for x in failures[:40])
            + "".join(f"\n  (accepted) {x}" for x in accepted_changed[:10]))
  print(report)
  assert not failures and not outside, report + (f"\n  written outside: {outside[:10]}" if outside else "")
