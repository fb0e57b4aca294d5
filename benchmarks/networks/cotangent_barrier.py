"""A probe of issue 26 item 6: does materialising each convolution output's cotangent speed up the backward?

benchmarks/results/profile_step.md shows XLA:CPU fusing the backward's long elementwise cotangent chain into
every consumer (the bias-gradient reductions, sibling fusions) and recomputing it there. Here every 3x3 and 1x1
convolution of the network (``models.layers.conv3x3`` / ``conv1x1``, patched while the step is traced) is
followed by an identity whose VJP multiplies the cotangent by the identity matrix: a dot, which XLA does not
fuse its producer chain into, so the cotangent is computed once and read by its consumers. The function and
its gradient are unchanged (the first loss is compared); the cost is one C x C product per pixel. Not adopted
in the library yet: this is the measurement that says whether to.

    python -m benchmarks.networks.cotangent_barrier [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, write
from benchmarks.networks.train_step import build
from models import layers
from training import runtime

CONFIGS = {"vp/digits (batch 128)": ("configs.vp.digits", None),
           "vp/cifar10 (DDPM++, batch 8)": ("configs.vp.cifar10", 8),
           "ve/cifar10 (NCSN++, batch 8)": ("configs.ve.cifar10", 8)}


@jax.custom_vjp
def materialised(y):
  """Identity; its VJP returns the cotangent through a product with the identity matrix (a dot)."""
  return y


def _fwd(y):
  return y, None


def _bwd(_, g):
  return (jnp.einsum("...c,cd->...d", g, jnp.eye(g.shape[-1], dtype=g.dtype)),)


materialised.defvjp(_fwd, _bwd)


def compiled_step(module: str, batch, patched: bool):
  conv3, conv1 = layers.conv3x3, layers.conv1x1
  if patched:
    layers.conv3x3 = lambda *a, **k: (lambda m: (lambda x: materialised(m(x))))(conv3(*a, **k))
    layers.conv1x1 = lambda *a, **k: (lambda m: (lambda x: materialised(m(x))))(conv1(*a, **k))
  try:
    step_fn, state, batches, run = build(module, batch)
    compiled = step_fn.lower(state, batches, run.step_key).compile(compiler_options=dict(runtime.CPU_OPTIONS))
  finally:
    layers.conv3x3, layers.conv1x1 = conv3, conv1
  return compiled, state, batches, run


def bench(name: str, module: str, batch, rounds: int) -> dict:
  runs = {}
  for patched in (False, True):
    compiled, state, batches, run = compiled_step(module, batch, patched)
    state, metrics = compiled(state, batches, run.step_key)                 # warm-up
    runs[patched] = dict(fn=compiled, state=state, batches=batches, key=run.step_key, times=[],
                         loss=float(np.mean(np.asarray(metrics["loss"]))))
  for _ in range(rounds):                                                   # alternated: load falls on both
    for r in runs.values():
      t0 = time.perf_counter()
      r["state"], metrics = r["fn"](r["state"], r["batches"], r["key"])
      jax.block_until_ready(metrics)
      r["times"].append(time.perf_counter() - t0)
  plain, probe = runs[False], runs[True]
  return dict(config=name, batch=int(plain["batches"].shape[1]), plain_step_s=statistics.median(plain["times"]),
              materialised_step_s=statistics.median(probe["times"]),
              ratio=statistics.median(p / q for p, q in zip(probe["times"], plain["times"])),
              first_loss_rel_diff=abs(probe["loss"] - plain["loss"]) / abs(plain["loss"]), load_1min=os.getloadavg()[0])


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
           "step "
           "compiled with main.py's options, plain and with every conv output's cotangent materialised by an identity "
           "product in its VJP (module docstring), called alternately; medians; ratio = median of per-round ratios "
           "(below 1: faster); first_loss_rel_diff: the warm-up step's loss, the same function.")
  print(write("cotangent_barrier", "Materialising the convolutions' cotangents: train step time", rows,
              ["config", "batch", "plain_step_s", "materialised_step_s", "ratio", "first_loss_rel_diff", "load_1min"],
              notes))


if __name__ == "__main__":
  main()
