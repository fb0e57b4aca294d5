"""main.py killed by SIGKILL at chosen points, and the audit of what the killed run left (tests/test_kill.py
asserts on it; benchmarks/pipeline/kill_resume.py reports it).

The kill points are injected from outside the project code: ``KILLER`` runs main.py in-process after
wrapping one function, which sends SIGKILL to its own process at the chosen moment:
  * ``finalize``: orbax has written every file of a checkpoint (its commit-success marker included)
    into its temporary directory and is about to commit it: the rename of ``<kind>/<step>.orbax-
    checkpoint-tmp-*`` to ``<kind>/<step>`` (``os.rename``, wrapped; no private orbax module), i.e. the
    checkpoint is complete on disk but not committed: the most tempting half-written state;
  * ``in_flight``: right after ``Checkpointer.save`` returned, while orbax's background thread writes;
  * ``round`` (evaluation): when sampling round i has been computed, before its file is in place;
  * ``timer``: after a delay drawn from a seeded generator, wherever the run is (a step, a write, a log).
"""

import os
import subprocess
import sys

import jax
import numpy as np

from testkit.pipeline import ROOT, tiny_config
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
