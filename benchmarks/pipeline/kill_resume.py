"""kill -9 at ten points of a training run, then resume: is every resumed run bit-identical to the
uninterrupted one, and was any half-written checkpoint taken as valid?

The tiny digits run of tests/test_kill.py (6 steps, a snapshot every 2, a preemption save every step),
killed by SIGKILL from outside the project code (testkit/kill.py's KILLER): while orbax commits a
snapshot or a preemption checkpoint (files written, rename not done), right after a save started, and
at seeded random moments. For each kill the table reports what the killed run left (committed steps,
uncommitted temporary directories), whether every committed checkpoint restores to the uninterrupted
run's state at its step, and whether the resumed run ends bit-identical.

    python -m benchmarks.pipeline.kill_resume
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import jax
import numpy as np

from benchmarks.common import ROOT, write

KILLS = [("finalize", "checkpoints", 2), ("finalize", "checkpoints", 4), ("finalize", "checkpoints", 6),
         ("finalize", "checkpoints-meta", 1), ("finalize", "checkpoints-meta", 3), ("finalize", "checkpoints-meta", 5),
         ("in_flight", "checkpoints", 4), ("in_flight", "checkpoints-meta", 2),
         ("timer", "-", 0), ("timer", "-", 0)]


def identical(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  from testkit import kill as k
  from testkit.pipeline import tiny_flags

  root = os.path.join(ROOT, "runs", "bench_kill_resume")
  shutil.rmtree(root, ignore_errors=True)
  reference = os.path.join(root, "whole")
  start = time.perf_counter()
  assert k.run(tiny_flags(reference, k.N_ITERS) + ["--config.training.snapshot_freq=1"]).returncode == 0
  wall = time.perf_counter() - start
  rng = np.random.default_rng(0)
  rows = []
  for i, (mode, kind, step) in enumerate(KILLS):
    workdir = os.path.join(root, f"kill_{i}")
    delay = float(rng.uniform(0.3, 0.95) * wall) if mode == "timer" else 0.0
    killed = k.run(tiny_flags(workdir, k.N_ITERS), (mode, kind, step, delay))
    try:
      seen, valid = k.audit(workdir, reference), True
    except AssertionError:                      # a committed checkpoint loaded to a different state
      seen, valid = dict(k.checkpoint_steps(workdir), unloadable=[], resumes_from=None), False
    resumed = k.run(tiny_flags(workdir, k.N_ITERS))
    same = resumed.returncode == 0 and identical(k.restore(workdir, k.N_ITERS), k.restore(reference, k.N_ITERS))
    where = f"{mode} {kind} step {step}" if mode != "timer" else f"timer {delay:.1f} s"
    row = dict(kill=where, killed_by_sigkill=killed.returncode == -signal.SIGKILL,
               committed_snapshots=str(seen["checkpoints"]), committed_preemption=str(seen["checkpoints-meta"]),
               uncommitted_left=len(seen["uncommitted"]), unloadable_committed=",".join(seen["unloadable"]) or "-",
               loadable_all_exact=valid, resumes_from=seen["resumes_from"], resumed_bit_identical=same)
    print(row, flush=True)
    rows.append(row)
  notes = ("`python -m benchmarks.pipeline.kill_resume`: tests/test_kill.py's tiny digits run (6 steps, snapshot "
           f"every 2, preemption save every step; uninterrupted wall time {wall:.0f} s), killed with SIGKILL at each "
           "point, then resumed with the same command. finalize: orbax has written the checkpoint's files and is "
           "about to commit (rename) it; in_flight: right after the save began; timer: a seeded fraction 0.3-0.95 of "
           "the uninterrupted wall time. committed_*: the steps the resuming run can see; uncommitted_left: temporary "
           "directories of half-written checkpoints; unloadable_committed: committed steps that no longer load (an "
           "old checkpoint whose deletion the kill interrupted; resuming skips them); loadable_all_exact: every "
           "loadable committed step restores to the uninterrupted run's state at that step, bit for bit; "
           "resumes_from: the step the resuming run picks.")
  print(write("kill_resume", "kill -9 and resume", rows,
              ["kill", "killed_by_sigkill", "committed_snapshots", "committed_preemption", "uncommitted_left",
               "unloadable_committed", "loadable_all_exact", "resumes_from", "resumed_bit_identical"], notes))


if __name__ == "__main__":
  main()
