"""Peak memory of the training step from XLA's buffer assignment, without running it.

The step is the one ``--mode train`` runs (``training.train.make_step_fn``: loss, gradient, Adam with
warm-up and clipping, EMA; the state donated), lowered and compiled for abstract inputs of the given
per-device batch on one device; ``compiled.memory_analysis()`` gives the bytes of the arguments
(state + batch), outputs, temporaries (activations kept for the backward pass and workspace) and the
aliased (donated) bytes. peak_GiB = arguments + outputs + temporaries - aliased: the live set XLA
plans for one device. These are XLA:CPU's buffer assignments; on a GPU the fusion decisions, hence the
temporaries, differ somewhat, so read them as estimates until a GPU run confirms.

    python benchmarks/train_memory.py [--batches 32 128]
"""

from __future__ import annotations

import argparse
import importlib
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import _util  # noqa: F401  (puts the repository on sys.path)
from _util import write
from training import step as step_lib
from training.train import make_step_fn, setup

CONFIGS = {
    "NCSN++ (ve/cifar10)": "configs.ve.cifar10",
    "NCSN++ deep (ve/cifar10_deep)": "configs.ve.cifar10_deep",
    "DDPM++ (vp/cifar10)": "configs.vp.cifar10",
    "DDPM++ deep (vp/cifar10_deep)": "configs.vp.cifar10_deep",
}
GIB = 2.0 ** 30


def analyse(module: str, batch: int) -> dict:
  config = importlib.import_module(module).get_config()
  config.training.batch_size = batch * len(jax.devices())
  run = setup(config)
  step_fn = step_lib.shard_step(make_step_fn(config, run), run.mesh)
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
  return dict(batch_per_device=batch, state_GiB=state_bytes / GIB, arguments_GiB=args / GIB, outputs_GiB=out / GIB,
              temporaries_GiB=temp / GIB, aliased_GiB=alias / GIB, peak_GiB=(args + out + temp - alias) / GIB,
              compile_s=compile_s)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="*", default=[32, 128], help="per-device batch sizes")
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  args = parser.parse_args()
  rows = []
  for name in args.configs:
    for batch in args.batches:
      rows.append(dict(config=name, **analyse(CONFIGS[name], batch)))
      print(rows[-1], flush=True)
  notes = ("`python benchmarks/train_memory.py`: the train step (loss, gradient, Adam, EMA; state donated) compiled "
           "for one device at each per-device batch, never run; XLA's `memory_analysis()`: arguments (state + batch), "
           "outputs, temporaries, aliased (donated) bytes; peak = arguments + outputs + temporaries - aliased. "
           "state: params + EMA + Adam moments (float32). XLA:CPU buffer assignment: an estimate of the GPU figure. "
           "No rematerialisation (`training.remat` does not exist yet).")
  print(write("train_memory", "Training-step memory from XLA's buffer assignment", rows,
              ["config", "batch_per_device", "state_GiB", "arguments_GiB", "outputs_GiB", "temporaries_GiB",
               "aliased_GiB", "peak_GiB", "compile_s"], notes))


if __name__ == "__main__":
  main()
