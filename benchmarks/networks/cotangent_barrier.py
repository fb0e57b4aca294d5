"""Issue 26 item 6: does materialising each convolution output's cotangent speed up the train step?

benchmarks/results/profile_step.md shows XLA:CPU fusing the backward's long elementwise cotangent chain into
every consumer (the bias-gradient reductions, sibling fusions) and recomputing it there.
``training.backward = "materialised"`` follows every 3x3 and 1x1 convolution by ``models.layers.
materialise_cotangent``, an identity whose VJP multiplies the cotangent by the identity matrix: a dot, which
XLA does not fuse its producer chain into, so the cotangent is computed once and read by its consumers. The
function and its gradient are unchanged (the first loss is compared; tests/test_conv_vjp.py checks the
gradients). This times the real train step with ``"xla"`` and with ``"materialised"``, compiled as main.py
compiles it, called alternately so that the machine's load falls on both.

    python -m benchmarks.networks.cotangent_barrier [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from benchmarks.common import machine, write
from benchmarks.networks.cpu_options import alternate
from benchmarks.networks.train_step import build
from training import runtime

CONFIGS = {"vp/digits (batch 128)": ("configs.vp.digits", None),
           "vp/cifar10 (DDPM++, batch 8)": ("configs.vp.cifar10", 8),
           "ve/cifar10 (NCSN++, batch 8)": ("configs.ve.cifar10", 8)}
VJPS = ("xla", "materialised")


def bench(name: str, module: str, batch, rounds: int) -> dict:
  steps, states, losses = {}, {}, {}
  for vjp in VJPS:
    step_fn, state, batches, run = build(module, batch, {"training.backward": vjp})
    compiled = step_fn.lower(state, batches, run.step_key).compile(compiler_options=dict(runtime.CPU_OPTIONS))
    states[vjp], metrics = compiled(state, batches, run.step_key)            # warm-up
    steps[vjp] = (compiled, batches, run.step_key)
    losses[vjp] = float(np.mean(np.asarray(metrics["loss"])))
  times = alternate(steps, states, rounds)
  plain, probe = (times[v] for v in VJPS)
  return dict(config=name, batch=int(batches.shape[1]), xla_step_s=statistics.median(plain),
              materialised_step_s=statistics.median(probe),
              ratio=statistics.median(p / q for p, q in zip(probe, plain)),
              first_loss_rel_diff=abs(losses["materialised"] - losses["xla"]) / abs(losses["xla"]),
              load_1min=os.getloadavg()[0])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  rows = []
  for name in args.configs:
    rows.append(bench(name, *CONFIGS[name], args.rounds))
    print(rows[-1], flush=True)
  notes = (f"`python -m benchmarks.networks.cotangent_barrier --rounds {args.rounds}` on {machine()}: the real train "
           "step compiled with main.py's options, with `training.backward` \"xla\" and \"materialised\" (module "
           "docstring), called alternately; medians; ratio = median of per-round ratios materialised / xla (below 1: "
           "faster); first_loss_rel_diff: the warm-up step's loss, the same function.")
  print(write("cotangent_barrier", "Materialising the convolutions' cotangents: train step time", rows,
              ["config", "batch", "xla_step_s", "materialised_step_s", "ratio", "first_loss_rel_diff", "load_1min"],
              notes))


if __name__ == "__main__":
  main()
