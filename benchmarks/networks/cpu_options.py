"""Variants of the real train step against main.py's: XLA:CPU options (training/runtime.py CPU_OPTIONS) and
network implementations, all in one process.

The step is the one ``--mode train`` runs (training.train.make_step_fn: loss, gradient, Adam, EMA). A
variant is XLA compile options (``compile(compiler_options=...)``) plus library attributes replaced while
the step is traced (``PATCHES``: another implementation of the same function, same parameters); variants
without patches share one lowering. Each compiled copy trains its own state on the same random batch;
the copies are called alternately, round by round, so slow spells of a shared machine fall on all.
Reported: each variant's median step time and the median of the per-round ratios variant / main.py
(below 1: faster than what main.py runs).

    python -m benchmarks.networks.cpu_options [--configs ...] [--variants ...] [--rounds 20] [--name cpu_options]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.common import machine, write
from benchmarks.networks.train_step import build
from models import layers, norm
from training import runtime
from training import step as step_lib
from training.train import make_step_fn

# name -> (config module, batch: None = the config's own)
CONFIGS = {
    "vp/digits (the embedded default, batch 128)": ("configs.vp.digits", None),
    "vp/cifar10 (DDPM++, batch 8)": ("configs.vp.cifar10", 8),
    "ve/cifar10 (NCSN++, batch 8)": ("configs.ve.cifar10", 8),
}


class FlatAttnBlock(layers.AttnBlock):
  """layers.AttnBlock with the H W positions flattened: q, k, v [B, HW, C] and two batched matmuls instead of
  score_sde's einsums over [B, H, W, H, W] (the same parameters and function)."""

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = layers.group_norm(c, self.max_groups, groups=self.groups, dtype=self.dtype, backward=self.backward)(x)
    q, k, v = (layers.nin(c, dtype=self.dtype, backward=self.backward)(y).reshape(b, h * w, c) for _ in range(3))
    logits = jnp.einsum("bnc,bmc->bnm", q, k) * c ** -0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    y = jnp.einsum("bnm,bmc->bnc", attn.astype(v.dtype), v).reshape(b, h, w, c)
    y = layers.nin(c, init_scale=self.init_scale, dtype=self.dtype, backward=self.backward)(y)
    return (x + y) / math.sqrt(2.0) if self.skip_rescale else x + y


FlatAttnBlock.__name__ = "AttnBlock"      # flax names parameters after the class: AttnBlock_0, ...

# name -> {(module, attribute): value} replaced while the step is traced
PATCHES = {
    "GroupNorm backward hand-written at every size": {(norm, "CUSTOM_BACKWARD_MIN_PIXELS"): 0},
    "attention on [B, HW, C]": {(layers, "AttnBlock"): FlatAttnBlock},
}
NO_FUSION_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
# name -> (XLA compile options, PATCHES names)
VARIANTS = {
    "main.py": (dict(runtime.CPU_OPTIONS), ()),
    "XLA defaults": ({}, ()),
    "no fusion emitters": (dict(runtime.CPU_OPTIONS, **NO_FUSION_EMITTERS), ()),
    "no tree reduction": (dict(runtime.CPU_OPTIONS, xla_disable_hlo_passes="tree_reduction_rewriter"), ()),
    "GN hand-written backward": (dict(runtime.CPU_OPTIONS), ("GroupNorm backward hand-written at every size",)),
    "flat attention": (dict(runtime.CPU_OPTIONS), ("attention on [B, HW, C]",)),
    "all three": (dict(runtime.CPU_OPTIONS, **NO_FUSION_EMITTERS),
                  ("GroupNorm backward hand-written at every size", "attention on [B, HW, C]")),
}


@contextlib.contextmanager
def patched(names):
  """Replaces the attributes of PATCHES[name] for every name in ``names``; restores them on exit."""
  items = [(mod, attr, value) for name in names for (mod, attr), value in PATCHES[name].items()]
  saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in items]
  try:
    for mod, attr, value in items:
      setattr(mod, attr, value)
    yield
  finally:
    for mod, attr, value in reversed(saved):
      setattr(mod, attr, value)


def alternate(steps: dict, states: dict, rounds: int) -> dict[str, list[float]]:
  """Seconds of each step call, name -> one per round: ``steps[name] = (compiled step, batches, key)`` is
  called once per round, in turn, on ``states[name]`` (updated in place: the step donates its state), so slow
  spells of a shared machine fall on all."""
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, (fn, batches, key) in steps.items():
      t0 = time.perf_counter()
      states[name], metrics = fn(states[name], batches, key)
      jax.block_until_ready(metrics)
      times[name].append(time.perf_counter() - t0)
  return times


def bench(name: str, module: str, batch: int | None, rounds: int, variants: list[str]) -> list[dict]:
  step_fn, state, batches, run = build(module, batch)
  lowered, compiled, states, losses = {}, {}, {}, {}
  for variant in variants:
    options, patches = VARIANTS[variant]
    if patches not in lowered:
      with patched(patches):        # a new jitted step: a fresh trace under the patches
        fn = step_lib.shard_step(make_step_fn(run), run.mesh) if patches else step_fn
        lowered[patches] = fn.lower(state, batches, run.step_key)
    compiled[variant] = lowered[patches].compile(compiler_options=options)
    states[variant] = jax.tree.map(lambda a: a.copy(), state)      # the step donates its state
    states[variant], metrics = compiled[variant](states[variant], batches, run.step_key)   # warm-up
    losses[variant] = float(jax.device_get(metrics["loss"]).ravel()[0])
  times = alternate({v: (fn, batches, run.step_key) for v, fn in compiled.items()}, states, rounds)
  base = times["main.py"]
  load = os.getloadavg()[0]
  return [dict(config=name, batch=batches.shape[1], variant=v, step_s=statistics.median(t),
               ratio_over_main_py=statistics.median(a / b for a, b in zip(t, base)),
               first_loss_rel_diff=abs(losses[v] / losses["main.py"] - 1), load_1min=load)
          for v, t in times.items()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS)[:2], choices=list(CONFIGS))
  parser.add_argument("--variants", nargs="*", default=["main.py", "XLA defaults"], choices=list(VARIANTS))
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--name", default="cpu_options")
  args = parser.parse_args()
  variants = ["main.py"] + [v for v in args.variants if v != "main.py"]
  rows = []
  load_start = os.getloadavg()[0]
  for name in args.configs:
    rows += bench(name, *CONFIGS[name], args.rounds, variants)
    for row in rows[-len(variants):]:
      print(row, flush=True)
  notes = (f"`python -m benchmarks.networks.cpu_options --rounds {args.rounds} --variants {' '.join(variants)}` on "
           f"{machine()}: the train step compiled per variant, called alternately for {args.rounds} rounds after a "
           "warm-up; step_s = median; ratio = median of the per-round ratios variant / main.py; first_loss_rel_diff = "
           "the warm-up step's loss (same state, batch and key) relative to main.py's. main.py = "
           f"{runtime.CPU_OPTIONS}. Variants (options; patches): "
           + "; ".join(f"{v} = {VARIANTS[v][0]}; {', '.join(VARIANTS[v][1]) or '-'}" for v in variants)
           + f". Load (1-minute average, 2 shared cores): {load_start:.1f} at the start, load_1min per config at "
           "the end of its rounds.")
  print(write(args.name, "Train step variants against main.py's: XLA:CPU options and implementations", rows,
              ["config", "batch", "variant", "step_s", "ratio_over_main_py", "first_loss_rel_diff", "load_1min"],
              notes))


if __name__ == "__main__":
  main()
