"""Convert a published score_sde checkpoint into a workdir that main.py samples and evaluates as is.

    python -m tools.convert_checkpoint IN --config configs/ve/cifar10.py --workdir DIR [--no-ema]
    python main.py --config configs/ve/cifar10.py --workdir DIR --mode sample

IN is a score_sde_pytorch ``checkpoint_N.pth`` or a score_sde (flax) ``checkpoint_N``; the format is
read from the contents. The snapshot is written at the checkpoint's own training step with the EMA
weights as the sampling/evaluation parameters (``--no-ema``: the raw ones), the raw weights as the
training parameters, and a fresh optimizer state. Bad input ends with one ``error:`` line and exit 2.
The config file is loaded by ``schema.load_config_file``.
"""

from __future__ import annotations

import argparse
import os
import sys


def existing_checkpoints(workdir: str) -> list[str]:
  """The checkpoint folders of ``workdir`` that hold anything (snapshots, preemption checkpoint)."""
  from training.checkpoint import PREEMPTION, SNAPSHOTS

  folders = [os.path.join(workdir, name) for name in (SNAPSHOTS, PREEMPTION)]
  return [f for f in folders if os.path.isdir(f) and os.listdir(f)]


def convert_to_workdir(path: str, config, workdir: str, *, ema: bool = True, add: bool = False) -> int:
  """Writes the converted snapshot into ``workdir``; returns its step.

  Raises:
    ValueError: a bad checkpoint (``models.CheckpointError``), format or config mismatch (named).
    FileExistsError: the workdir already holds checkpoints and ``add`` is False, or holds that step.
  """
  import jax
  import jax.numpy as jnp

  import models
  from training.checkpoint import Checkpointer
  from training.state import TrainState, get_optimizer

  existing = [] if add else existing_checkpoints(workdir)
  if existing:
    raise FileExistsError(f"--workdir {workdir} already holds checkpoints ({', '.join(existing)}): "
                          "pass --add to add the converted snapshot to that run, or choose an empty workdir")
  checkpoint = models.read_checkpoint(path)
  chosen = models.published.convert(checkpoint, config, ema=ema)
  raw = models.published.convert(checkpoint, config, ema=False) if ema else chosen
  optimizer = get_optimizer(config.optim)
  state = TrainState(step=jnp.asarray(checkpoint.step, jnp.int32), params=jax.tree.map(jnp.asarray, raw),
                     ema_params=jax.tree.map(jnp.asarray, chosen), opt_state=optimizer.init(raw))
  checkpointer = Checkpointer(workdir)
  try:
    if checkpoint.step in checkpointer.snapshot_steps():
      raise FileExistsError(f"{workdir} already holds a snapshot at step {checkpoint.step}")
    checkpointer.save(checkpoint.step, state, snapshot=True)
  finally:
    checkpointer.close()
  return checkpoint.step


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("checkpoint", help="score_sde_pytorch .pth or score_sde flax checkpoint file")
  parser.add_argument("--config", required=True, help="this project's config describing the checkpoint's network")
  parser.add_argument("--workdir", required=True, help="workdir to write the snapshot into")
  parser.add_argument("--no-ema", action="store_true", help="sample with the raw weights instead of the EMA")
  parser.add_argument("--add", action="store_true", help="add the snapshot to a workdir that already holds "
                      "checkpoints (refused otherwise)")
  args = parser.parse_args(argv)
  from schema import load_config_file

  try:
    config = load_config_file(args.config, "--config")
    step = convert_to_workdir(args.checkpoint, config, args.workdir, ema=not args.no_ema, add=args.add)
  except (ValueError, OSError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2
  number = -(-step // int(config.training.snapshot_freq)) if step else 0
  print(f"wrote the snapshot at step {step} to {args.workdir}; sample with\n"
        f"  python main.py --config {args.config} --workdir {args.workdir} --mode sample\n"
        f"and evaluate with --mode eval --config.eval.begin_ckpt={number} --config.eval.end_ckpt={number}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
