"""Peak memory of the training step from XLA's buffer assignment, and what remat / bfloat16 change.

The step is the one ``--mode train`` runs (``training.train.make_step_fn``: loss, gradient, Adam with
warm-up and clipping, EMA; the state donated), lowered and compiled for abstract inputs of the given
per-device batch on one device; ``compiled.memory_analysis()`` gives the bytes of the arguments
(state + batch), outputs, temporaries (activations kept for the backward pass and workspace) and the
aliased (donated) bytes. peak_GiB = arguments + outputs + temporaries - aliased: the live set XLA
plans for one device. These are XLA:CPU's buffer assignments; on a GPU the fusion decisions, hence the
temporaries, differ somewhat, so read them as estimates until a GPU run confirms.

Variants: ``training.remat`` in none / full / dots (jax.checkpoint per residual and attention block,
models.layers.REMAT_POLICIES) and ``training.compute_dtype="bfloat16"`` (float32 parameters). The
memory part only compiles. The time part runs the step at a small batch on this machine (CPU time:
XLA:CPU, not a GPU) to measure remat's recomputation cost as a ratio to no remat, variants alternated
round by round so load from other processes hits them alike; medians.

    python -m benchmarks.networks.train_memory [--batches 32 128] [--time-batch 8 --rounds 7]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from benchmarks.common import block, write
from training import step as step_lib
from training.state import create_train_state
from training.train import make_step_fn, setup

CONFIGS = {
    "NCSN++ (ve/cifar10)": "configs.ve.cifar10",
    "NCSN++ deep (ve/cifar10_deep)": "configs.ve.cifar10_deep",
    "DDPM++ (vp/cifar10)": "configs.vp.cifar10",
    "DDPM++ deep (vp/cifar10_deep)": "configs.vp.cifar10_deep",
}
VARIANTS = {                      # name -> (training.remat, training.compute_dtype)
    "none": ("none", "float32"),
    "full": ("full", "float32"),
    "dots": ("dots", "float32"),
    "bf16": ("none", "bfloat16"),
    "bf16+full": ("full", "bfloat16"),
}
GIB = 2.0 ** 30


def _run(module: str, batch: int, variant: str):
  config = importlib.import_module(module).get_config()
  config.training.batch_size = batch * len(jax.devices())
  config.training.remat, config.training.compute_dtype = VARIANTS[variant]
  run = setup(config)
  return config, run, step_lib.shard_step(make_step_fn(run), run.mesh)


def analyse(module: str, batch: int, variant: str) -> dict:
  """Compiles (never runs) the step for a per-device ``batch``; XLA's memory analysis in GiB."""
  config, run, step_fn = _run(module, batch, variant)
  state = run.state_template()
  batches = jax.ShapeDtypeStruct((1, config.training.batch_size) + run.data_shape, jnp.float32,
                                 sharding=NamedSharding(run.mesh, P(None, "data")))
  start = time.perf_counter()
  compiled = step_fn.lower(state, batches, run.step_key).compile()
  compile_s = time.perf_counter() - start
  m = compiled.memory_analysis()
  args, out, temp, alias = (m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                            m.alias_size_in_bytes)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return dict(batch_per_device=batch, variant=variant, state_GiB=state_bytes / GIB, arguments_GiB=args / GIB,
              outputs_GiB=out / GIB, temporaries_GiB=temp / GIB, aliased_GiB=alias / GIB,
              peak_GiB=(args + out + temp - alias) / GIB, compile_s=compile_s)


def time_variants(module: str, batch: int, variants: list[str], rounds: int) -> list[dict]:
  """Median seconds per executed step of each variant, alternating variants each round."""
  steps, state, batches = {}, None, None
  for variant in variants:
    config, run, step_fn = _run(module, batch, variant)
    if state is None:
      state = jax.device_put(create_train_state(run.model, run.optimizer, run.init_key, (1,) + run.data_shape),
                             NamedSharding(run.mesh, P()))
      data = jax.random.uniform(jax.random.key(0), (1, config.training.batch_size) + run.data_shape)
      batches = step_lib.put_batches(np.asarray(data), run.mesh)
    start = time.perf_counter()
    state, _ = block(step_fn(state, batches, run.step_key))            # compile + first run
    steps[variant] = (step_fn, run.step_key, time.perf_counter() - start)
  times: dict[str, list[float]] = {v: [] for v in variants}
  for _ in range(rounds):
    for variant in variants:
      step_fn, key, _ = steps[variant]
      start = time.perf_counter()
      state, metrics = block(step_fn(state, batches, key))
      times[variant].append(time.perf_counter() - start)
      assert np.all(np.isfinite(np.asarray(metrics["loss"]))), variant
  base = statistics.median(times["none"])
  return [dict(batch_per_device=batch, variant=v, first_call_s=steps[v][2], median_step_s=statistics.median(times[v]),
               min_step_s=min(times[v]), max_step_s=max(times[v]), time_vs_none=statistics.median(times[v]) / base,
               rounds=rounds) for v in variants]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="*", default=[32, 128], help="per-device batch sizes (compiled)")
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--time-batch", type=int, default=8, help="per-device batch of the timed steps")
  parser.add_argument("--time-configs", nargs="*", default=["NCSN++ (ve/cifar10)", "DDPM++ (vp/cifar10)"],
                      choices=list(CONFIGS))
  parser.add_argument("--rounds", type=int, default=7, help="timed rounds (one step of every variant each)")
  parser.add_argument("--time-variants", nargs="*", default=["none", "full", "dots"], choices=list(VARIANTS))
  parser.add_argument("--skip", choices=["memory", "time"], default=None)
  parser.add_argument("--name", default="train_memory", help="results file of the memory part (results/NAME.md)")
  args = parser.parse_args()

  if args.skip != "memory":
    rows = []
    for batch in args.batches:
      for name in args.configs:
        for variant in args.variants:
          rows.append(dict(config=name, **analyse(CONFIGS[name], batch, variant)))
          base = next((r for r in rows if r["config"] == name and r["batch_per_device"] == batch
                       and r["variant"] == "none"), None)
          rows[-1]["peak_vs_none"] = rows[-1]["peak_GiB"] / base["peak_GiB"] if base else float("nan")
          print(rows[-1], flush=True)
          write_memory(rows, args.name)      # after every row: a long run keeps what it measured

  if args.skip != "time":
    rows = []
    for name in args.time_configs:
      for row in time_variants(CONFIGS[name], args.time_batch, args.time_variants, args.rounds):
        rows.append(dict(config=name, **row))
        print(rows[-1], flush=True)
      write_time(rows, args.time_batch, args.rounds)


def write_memory(rows, name: str = "train_memory"):
  notes = ("`python -m benchmarks.networks.train_memory`: the train step (loss, gradient, Adam, EMA; state donated) "
           "compiled for one device at each per-device batch, never run; XLA's `memory_analysis()`: arguments (state "
           "+ batch), outputs, temporaries, aliased (donated) bytes; peak = arguments + outputs + temporaries - "
           "aliased. state: params + EMA + Adam moments (float32). Variants: `training.remat` none / full (keep only "
           "each residual and attention block's inputs) / dots (also keep conv and matmul outputs), "
           "`training.compute_dtype` bfloat16 (bf16, bf16+full; parameters, Adam, EMA stay float32). XLA:CPU buffer "
           "assignment, no GPU was run: an estimate of the GPU figure.")
  write(name, "Training-step memory from XLA's buffer assignment", rows,
        ["config", "batch_per_device", "variant", "state_GiB", "temporaries_GiB", "peak_GiB", "peak_vs_none",
         "compile_s"], notes)


def write_time(rows, batch: int, rounds: int):
  notes = (f"`python -m benchmarks.networks.train_memory --skip memory --time-batch {batch} --rounds {rounds}`: "
           "the train step executed on this machine's CPU (XLA:CPU, 2 cores shared with other processes: noisy), "
           "variants alternated each round, state carried from step to step; median, min and max of the rounds; "
           "time_vs_none = median / median of no remat. CPU time, not GPU time: remat's recomputation ratio "
           "should carry over roughly, bfloat16's speed does not (XLA:CPU emulates much of bf16 arithmetic; its "
           "speed is only known on a GPU).")
  write("train_memory_time", f"Training-step time with remat on CPU, per-device batch {batch}", rows,
        ["config", "batch_per_device", "variant", "median_step_s", "min_step_s", "max_step_s", "time_vs_none",
         "first_call_s", "rounds"], notes)


if __name__ == "__main__":
  main()
