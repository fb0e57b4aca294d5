"""Training throughput of the CIFAR-10 configurations and the digits default: steps/s and images/s of the real
train step.

The step is the one ``--mode train`` runs (``training.train.make_step_fn``: the config's loss, Adam
with warm-up and clipping, EMA; sharded over every device JAX sees), on random [-1, 1] batches
(the data pipeline is not timed). Compile time is the first call minus a run; steps/s is 1 / the
median of several timed calls. Default batch 8 on CPU; on a GPU pass ``--batch 128``.

    python -m benchmarks.networks.train_step                 # CPU, batch 8
    python -m benchmarks.networks.train_step --batch 128     # on a GPU
    python -m benchmarks.networks.train_step --batch 0 --configs vp/digits "vp/digits, former network" \
        --main_py_options --name train_step_digits          # the digits default at its batch, as main.py runs it
"""

from __future__ import annotations

import argparse
import importlib

import jax
import numpy as np

from benchmarks.common import machine, time_compiled, write
from training import runtime, step as step_lib
from training.state import create_train_state
from training.train import make_step_fn, setup

# name -> config module, or (config module, {"section.field": value} overrides)
CONFIGS = {
    "ve/cifar10 (NCSN++ cont., VE)": "configs.ve.cifar10",
    "vp/cifar10 (DDPM++ cont., VP)": "configs.vp.cifar10",
    "subvp/cifar10 (DDPM++ cont., sub-VP)": "configs.subvp.cifar10",
    "vp/digits": "configs.vp.digits",
    # the digits network until 2026-12-06: two residual blocks per level, attention at 4x4 too
    "vp/digits, former network": ("configs.vp.digits", {"model.num_res_blocks": 2, "model.attn_resolutions": (4,)}),
}
CIFAR10 = list(CONFIGS)[:3]


def build(module: str, batch: int | None, overrides: dict | None = None):
  """(sharded step, initial state, one random [-1, 1] batch on the mesh, run) of a config module's train
  step at ``batch`` (None or 0: the config's own batch size), with ``overrides`` {"section.field": value}."""
  config = importlib.import_module(module).get_config()
  for path, value in (overrides or {}).items():
    section, field = path.split(".")
    setattr(config[section], field, value)
  if batch:
    config.training.batch_size = batch
  run = setup(config)
  state = create_train_state(run.model, run.optimizer, run.init_key, (1,) + run.data_shape)
  step_fn = step_lib.shard_step(make_step_fn(run), run.mesh)
  shape = (1, config.training.batch_size) + run.data_shape
  batches = step_lib.put_batches(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32), run.mesh)
  return step_fn, state, batches, run


def bench(name: str, spec, batch: int, repeats: int, options: dict | None = None) -> dict:
  module, overrides = (spec, None) if isinstance(spec, str) else spec
  step_fn, state, batches, run = build(module, batch, overrides)
  if options is not None:                        # compiled as main.py compiles it (training.runtime)
    jitted = step_fn
    compiled = {}

    def step_fn(state, batches, key, _jitted=jitted):
      if "fn" not in compiled:
        compiled["fn"] = _jitted.lower(state, batches, key).compile(compiler_options=options)
      return compiled["fn"](state, batches, key)

  batch = batches.shape[1]
  params = sum(leaf.size for leaf in jax.tree.leaves(state.params))

  # The step donates its state, so each call feeds the previous call's output (as training does).
  holder = {"state": state}

  def call(batches, key):
    holder["state"], metrics = step_fn(holder["state"], batches, key)
    return metrics

  compile_s, run_s, metrics = time_compiled(call, batches, run.step_key, repeats=repeats)
  return dict(config=name, params=params, devices=len(jax.devices()), batch=batch, compile_s=compile_s,
              step_s=run_s, steps_per_s=1 / run_s, images_per_s=batch / run_s,
              loss_finite=bool(np.all(np.isfinite(np.asarray(metrics["loss"])))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8, help="0: each config's own batch size")
  parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
  parser.add_argument("--configs", nargs="*", default=CIFAR10, choices=list(CONFIGS))
  parser.add_argument("--name", default=None, help="results file name (default train_step_<platform>_b<batch>)")
  parser.add_argument("--main_py_options", action="store_true",
                      help="compile with main.py's XLA:CPU options (training.runtime.CPU_OPTIONS), not XLA's defaults")
  args = parser.parse_args()

  rows = []
  for name in args.configs:
    options = dict(runtime.CPU_OPTIONS) if args.main_py_options else None
    rows.append(bench(name, CONFIGS[name], args.batch, args.repeats, options))
    print(rows[-1], flush=True)
  out = args.name or f"train_step_{jax.devices()[0].platform}_b{args.batch}"
  notes = (f"`python -m benchmarks.networks.train_step --batch {args.batch} --configs ...` on {machine()}. One "
           f"optimisation step per call (loss, gradient, Adam, EMA), median of {args.repeats} calls after compilation; "
           "random batches; " + (f"main.py's compiler options {runtime.CPU_OPTIONS} (--main_py_options)."
                                 if args.main_py_options else
                                 "XLA's default compiler options (main.py passes training.runtime.CPU_OPTIONS)."))
  print(write(out, f"Training throughput, batch {args.batch or 'of each config'}", rows,
              ["config", "params", "devices", "batch", "compile_s", "step_s", "steps_per_s", "images_per_s",
               "loss_finite"],
              notes))


if __name__ == "__main__":
  main()
