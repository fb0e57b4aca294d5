"""kill -9 survival: ``main.py --mode train`` killed by SIGKILL at chosen points resumes to the state an
uninterrupted run reaches, bit for bit, and never takes a half-written checkpoint as valid.

The kill points (``finalize``, ``in_flight``, ``round``, ``timer``) are injected from outside the project
code by testkit/kill.py's ``KILLER`` (its docstring lists them); ``audit`` checks what a killed run left.
CI runs three points (one of each); ``benchmarks/pipeline/kill_resume.py`` runs ten and reports where they
landed.
"""

import glob
import os
import shutil
import signal
import time

import numpy as np
import pytest

from testkit.kill import N_ITERS, assert_identical, audit, restore, run
from testkit.pipeline import tiny_flags
from training.checkpoint import PREEMPTION, SNAPSHOTS


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_killed_during_a_preemption_save(tmp_path, reference):
  kill_and_resume(str(tmp_path), ("in_flight", PREEMPTION, 3, 0), reference)


@pytest.mark.slow
def test_killed_at_a_random_moment(tmp_path, reference):
  """At a seeded fraction (0.6-0.95) of the uninterrupted run's wall time: mostly start-up and
  compilation in this tiny run, sometimes the loop (benchmarks/pipeline/kill_resume.py reports where ten land)."""
  delay = np.random.default_rng(7).uniform(0.6, 0.95) * reference[1]
  kill_and_resume(str(tmp_path), ("timer", "-", 0, delay), reference)


EVAL = ["--mode=eval", "--config.eval.num_samples=12", "--config.eval.batch_size=4", "--config.eval.begin_ckpt=3",
        "--config.eval.end_ckpt=3", "--config.sampling.pc.num_steps=3"]


@pytest.mark.slow
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
