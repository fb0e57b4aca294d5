"""Checkpoints with orbax: kept snapshots plus one frequently overwritten preemption checkpoint.

``restore_latest`` takes the newest checkpoint of either kind that loads; a corrupted one is skipped
with a warning and the next older one is tried, so a crash while writing loses at most one interval.
"""

from __future__ import annotations

import logging
import os

import orbax.checkpoint as ocp

SNAPSHOTS = "checkpoints"
PREEMPTION = "checkpoints-meta"


class Checkpointer:
  """Snapshots in ``workdir/checkpoints`` (all kept) and the preemption checkpoint in
  ``workdir/checkpoints-meta`` (only the newest kept)."""

  def __init__(self, workdir: str):
    workdir = os.path.abspath(workdir)
    # Multi-process runs: every process calls save/wait/close (process 0 writes the metadata, each its
    # own shards) and the two managers, both saving step k at once, need distinct barrier names.
    options = lambda keep, name: ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=name))
    self.snapshots = ocp.CheckpointManager(os.path.join(workdir, SNAPSHOTS), options=options(None, "snapshots"))
    self.preemption = ocp.CheckpointManager(os.path.join(workdir, PREEMPTION), options=options(1, "preemption"))

  def save(self, step: int, state, *, snapshot: bool) -> None:
    """Writes ``state`` at ``step`` (asynchronously; ``wait`` makes it durable)."""
    manager = self.snapshots if snapshot else self.preemption
    if step not in manager.all_steps():
      manager.save(step, args=ocp.args.StandardSave(state))

  def wait(self) -> None:
    self.snapshots.wait_until_finished()
    self.preemption.wait_until_finished()

  def snapshot_steps(self) -> list[int]:
    return sorted(self.snapshots.all_steps())

  def restore(self, step: int, template, *, snapshot: bool = True):
    manager = self.snapshots if snapshot else self.preemption
    return manager.restore(step, args=ocp.args.StandardRestore(template))

  def restore_latest(self, template):
    """The newest loadable state (preemption or snapshot), or None when there is none."""
    candidates = [(s, False) for s in self.preemption.all_steps()] + [(s, True) for s in self.snapshots.all_steps()]
    for step, snapshot in sorted(candidates, reverse=True):
      try:
        return self.restore(step, template, snapshot=snapshot)
      except Exception as e:  # a partly written or damaged checkpoint: fall back to an older one
        kind = "snapshot" if snapshot else "preemption checkpoint"
        logging.warning("skipping the %s at step %d, which does not load (%s: %s)", kind, step,
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
    return None

  def close(self) -> None:
    self.wait()
    self.snapshots.close()
    self.preemption.close()
