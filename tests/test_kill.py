"""kill -9 survival: ``main.py --mode train`` killed by SIGKILL at chosen points resumes to the state an
uninterrupted run reaches, bit for bit, and never takes a half-written checkpoint as valid.

The kill points are injected from outside the project code: ``KILLER`` runs main.py in-process after
wrapping one function, which sends SIGKILL to its own process at the chosen moment:
  * ``finalize``: orbax has written every file of a checkpoint (its commit-success marker included)
    into its temporary directory and is about to commit it: the rename of ``<kind>/<step>.orbax-
    checkpoint-tmp-*`` to ``<kind>/<step>`` (``os.rename``, wrapped; no private orbax module), i.e. the
    checkpoint is complete on disk but not committed: the most tempting half-written state;
  * ``in_flight``: right after ``Checkpointer.save`` returned, while orbax's background thread writes;
  * ``round`` (evaluation): when sampling round i has been computed, before its file is in place;
  * ``timer``: after a delay drawn from a seeded generator, wherever the run is (a step, a write, a log).
CI runs three points (one of each); ``benchmarks/kill_resume.py`` runs ten and reports where they landed.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.test_pipeline import ROOT, tiny_config, tiny_flags
from training.checkpoint import PREEMPTION, SNAPSHOTS, Checkpointer
from training.train import setup

N_ITERS = 6

KILLER = r"""
import os, random, signal, sys, threading
mode, kind, step, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
args = sys.argv[5:]

def die(where=mode):
  sys.stderr.write(f"\nSIGKILL at {where}\n")    # the test reads where the kill landed (own line: tqdm)
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)

if mode == "finalize":                     # all files written, commit (rename) not done
  # orbax commits a checkpoint by renaming its temporary directory <kind>/<step>.orbax-checkpoint-tmp-*
  # into <kind>/<step> (epath's local backend: os.rename); die instead of that rename.
  real = {name: getattr(os, name) for name in ("rename", "replace")}
  def committing(src, dst):
    dst, src = os.path.normpath(os.fsdecode(dst)), os.path.basename(os.fsdecode(src))
    return (os.path.basename(dst) == str(step) and os.path.basename(os.path.dirname(dst)) == kind
            and src.startswith(f"{step}.") and "tmp" in src)
  def wrap(name):
    def call(src, dst, *a, **k):
      if committing(src, dst):
        done = sorted(os.listdir(src))
        die(f"os.{name} {os.path.basename(os.fsdecode(src))} -> {kind}/{step}, holding {done}")
      return real[name](src, dst, *a, **k)
    return call
  for name in real:
    setattr(os, name, wrap(name))
elif mode == "in_flight":                  # the asynchronous write has just started
  from training import checkpoint
  original = checkpoint.Checkpointer.save
  def save(self, s, state, *, snapshot):
    original(self, s, state, snapshot=snapshot)
    if s == step and snapshot == (kind == "checkpoints"):
      die()
  checkpoint.Checkpointer.save = save
elif mode == "round":                      # evaluation: round `step` computed, its file not yet in place
  real_replace = os.replace
  def replace(src, dst, *a, **k):
    if os.path.basename(str(dst)) == f"round_{step}.npz":
      die()
    return real_replace(src, dst, *a, **k)
  os.replace = replace
elif mode == "timer":
  threading.Timer(delay, die).start()
sys.argv = ["main.py", *args]
import runpy
runpy.run_path(os.path.join(os.getcwd(), "main.py"), run_name="__main__")
"""


def run(args, killer=None, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  argv = [sys.executable, "-c", KILLER, *map(str, killer), *args] if killer else [sys.executable, "main.py", *args]
  return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def checkpoint_steps(workdir: str) -> dict:
  """{kind: [committed steps]} as the resuming run sees them, and the uncommitted leftovers."""
  checkpointer = Checkpointer(workdir)
  try:
    steps = {SNAPSHOTS: checkpointer.snapshot_steps(), PREEMPTION: sorted(checkpointer.preemption.all_steps())}
  finally:
    checkpointer.close()
  leftovers = sorted(os.path.join(kind, name) for kind in (SNAPSHOTS, PREEMPTION)
                     if os.path.isdir(os.path.join(workdir, kind))
                     for name in os.listdir(os.path.join(workdir, kind)) if "tmp" in name)
  return {**steps, "uncommitted": [os.path.basename(name) for name in leftovers],
          "uncommitted_files": {name: sorted(os.listdir(os.path.join(workdir, name))) for name in leftovers}}


def restore(workdir: str, step: int | None, snapshot: bool = True):
  """The state at ``step`` (None: the newest loadable one, as a resuming run picks it)."""
  checkpointer = Checkpointer(workdir)
  template = setup(tiny_config()).state_template()
  try:
    if step is None:
      return checkpointer.restore_latest(template)
    return checkpointer.restore(step, template, snapshot=snapshot)
  finally:
    checkpointer.close()


def audit(workdir: str, reference: str) -> dict:
  """What a killed run left. Each committed checkpoint either loads to exactly the uninterrupted run's
  state at its step or does not load at all (e.g. an old one whose deletion the kill interrupted;
  resuming skips those); the one a resuming run picks loads and is exact."""
  seen = checkpoint_steps(workdir)
  unloadable = []
  for kind, snapshot in ((SNAPSHOTS, True), (PREEMPTION, False)):
    for step in seen[kind]:
      try:
        state = restore(workdir, step, snapshot)
      except Exception:  # noqa: BLE001  (orbax raises several types for a damaged directory)
        unloadable.append(f"{kind}/{step}")
        continue
      assert_identical(state, restore(reference, step))
  latest = restore(workdir, None)
  if latest is not None:
    assert_identical(latest, restore(reference, int(latest.step)))
  return {**seen, "unloadable": unloadable, "resumes_from": None if latest is None else int(latest.step)}


def assert_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, with a snapshot at every step (the state of step k, to compare with)."""
  workdir = str(tmp_path_factory.mktemp("whole"))
  start = time.perf_counter()
  result = run(tiny_flags(workdir, N_ITERS) + ["--config.training.snapshot_freq=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, time.perf_counter() - start


def kill_and_resume(workdir: str, killer, reference) -> dict:
  """Kills a run at ``killer``; checks every checkpoint it left is valid; resumes; returns what it saw."""
  reference, _ = reference
  killed = run(tiny_flags(workdir, N_ITERS), killer)
  assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
  seen = audit(workdir, reference)
  seen["killed_at"] = [line for line in killed.stderr.splitlines() if line.startswith("SIGKILL at")]
  resumed = run(tiny_flags(workdir, N_ITERS))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_identical(restore(workdir, N_ITERS), restore(reference, N_ITERS))
  return seen


def test_killed_while_committing_a_snapshot(tmp_path, reference):
  """Step 4's snapshot is fully written but not committed when the process dies: it must not count."""
  seen = kill_and_resume(str(tmp_path), ("finalize", SNAPSHOTS, 4, 0), reference)
  assert 4 not in seen[SNAPSHOTS] and seen[SNAPSHOTS] == [2]
  # The kill landed on the commit: the rename of step 4's temporary directory, left behind uncommitted
  # holding every entry of a committed step-4 snapshot (orbax writes commit_success.txt last, just
  # before the rename).
  [where] = seen["killed_at"]
  assert where.startswith("SIGKILL at os.rename 4.") and f"-> {SNAPSHOTS}/4," in where, where
  [(leftover, files)] = [(n, f) for n, f in seen["uncommitted_files"].items() if n.startswith(f"{SNAPSHOTS}/4.")]
  committed = sorted(os.listdir(os.path.join(reference[0], SNAPSHOTS, "4")))
  assert files == committed and "commit_success.txt" in files, (leftover, files, committed)


def test_killed_during_a_preemption_save(tmp_path, reference):
  kill_and_resume(str(tmp_path), ("in_flight", PREEMPTION, 3, 0), reference)


def test_killed_at_a_random_moment(tmp_path, reference):
  """At a seeded fraction (0.6-0.95) of the uninterrupted run's wall time: mostly start-up and
  compilation in this tiny run, sometimes the loop (benchmarks/kill_resume.py reports where ten land)."""
  delay = np.random.default_rng(7).uniform(0.6, 0.95) * reference[1]
  kill_and_resume(str(tmp_path), ("timer", "-", 0, delay), reference)


EVAL = ["--mode=eval", "--config.eval.num_samples=12", "--config.eval.batch_size=4", "--config.eval.begin_ckpt=3",
        "--config.eval.end_ckpt=3", "--config.sampling.pc.num_steps=3"]


def test_evaluation_killed_between_rounds_resumes_without_lost_or_repeated_rounds(tmp_path, reference):
  """Three sampling rounds of the step-3 snapshot; SIGKILL once round 1 is computed but before its file is in place. The rerun
  reuses round 0, redoes rounds 1 and 2, and saves exactly the samples of an uninterrupted evaluation."""
  workdir, _ = reference
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  for target in (whole, killed):
    shutil.copytree(workdir, target)
  args = lambda target: tiny_flags(target, N_ITERS) + ["--config.training.snapshot_freq=1"] + EVAL
  assert run(args(whole)).returncode == 0
  dead = run(args(killed), ("round", "-", 1, 0))
  assert dead.returncode == -signal.SIGKILL, dead.stderr[-3000:]
  rounds = sorted(os.path.basename(p) for p in glob.glob(os.path.join(killed, "eval", "rounds_step_3", "*")))
  assert rounds == ["round_0.npz", "round_1.npz.tmp.npz"], rounds            # round 1 never became valid
  resumed = run(args(killed))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  saved = [sorted(glob.glob(os.path.join(target, "eval", "**", "*.npz"), recursive=True)) for target in (whole, killed)]
  assert [os.path.relpath(p, whole) for p in saved[0]] == [os.path.relpath(p, killed) for p in saved[1]] and saved[0]
  for a, b in zip(*saved):
    with np.load(a) as x, np.load(b) as y:
      assert x.files == y.files
      for name in x.files:
        np.testing.assert_array_equal(x[name], y[name])
