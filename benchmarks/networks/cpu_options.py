"""main.py's XLA:CPU options (training/runtime.py CPU_OPTIONS) against XLA's defaults, on the real train step.

The step is the one ``--mode train`` runs (training.train.make_step_fn: loss, gradient, Adam, EMA),
lowered once and compiled twice in this process (``compile(compiler_options=...)``), each copy training
its own state on the same random batch; the two are called alternately, round by round, so slow spells
of a shared machine fall on both. Reported: each variant's median step time and the median of the
per-round ratios main.py / defaults (below 1: main.py's options are faster).

    python -m benchmarks.networks.cpu_options [--configs ...] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from benchmarks.common import machine, write
from benchmarks.networks.train_step import build
from training import runtime

# name -> (config module, batch: None = the config's own)
CONFIGS = {
    "vp/digits (the embedded default, batch 128)": ("configs.vp.digits", None),
    "vp/cifar10 (DDPM++, batch 8)": ("configs.vp.cifar10", 8),
    "ve/cifar10 (NCSN++, batch 8)": ("configs.ve.cifar10", 8),
}
VARIANTS = {"XLA defaults": {}, "main.py": dict(runtime.CPU_OPTIONS)}


def bench(name: str, module: str, batch: int | None, rounds: int) -> dict:
  step_fn, state, batches, run = build(module, batch)
  lowered = step_fn.lower(state, batches, run.step_key)
  compiled, states, times = {}, {}, {v: [] for v in VARIANTS}
  for variant, options in VARIANTS.items():
    compiled[variant] = lowered.compile(compiler_options=options)
    states[variant] = jax.tree.map(lambda a: a.copy(), state)      # the step donates its state
    states[variant], metrics = compiled[variant](states[variant], batches, run.step_key)   # warm-up
    jax.block_until_ready(metrics)
  for _ in range(rounds):
    for variant, fn in compiled.items():
      t0 = time.perf_counter()
      states[variant], metrics = fn(states[variant], batches, run.step_key)
      jax.block_until_ready(metrics)
      times[variant].append(time.perf_counter() - t0)
  ratio = statistics.median(m / d for m, d in zip(times["main.py"], times["XLA defaults"]))
  return dict(config=name, batch=batches.shape[1], defaults_step_s=statistics.median(times["XLA defaults"]),
              main_py_step_s=statistics.median(times["main.py"]), ratio_main_py_over_defaults=ratio)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS)[:2], choices=list(CONFIGS))
  parser.add_argument("--rounds", type=int, default=20)
  args = parser.parse_args()
  rows = []
  for name in args.configs:
    rows.append(bench(name, *CONFIGS[name], args.rounds))
    print(rows[-1], flush=True)
  notes = (f"`python -m benchmarks.networks.cpu_options --rounds {args.rounds}` on {machine()}: the train step "
           f"compiled with XLA's defaults and with main.py's options {runtime.CPU_OPTIONS}, called alternately for "
           f"{args.rounds} rounds after a warm-up; medians; ratio = median of the per-round ratios main.py / "
           "defaults.")
  print(write("cpu_options", "main.py's XLA:CPU options against XLA's defaults: train step", rows,
              ["config", "batch", "defaults_step_s", "main_py_step_s", "ratio_main_py_over_defaults"], notes))


if __name__ == "__main__":
  main()
