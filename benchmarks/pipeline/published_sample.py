"""``--mode sample`` of a converted full-size published model on CPU: NCSN++ (score_sde_pytorch's
``ve/cifar10_ncsnpp_continuous``), batch 8, 100 NFE.

No published checkpoint can be downloaded here, so the weights are the seeded ones of the
equivalence fixture (``tests/reference/data/pytorch_ve_cifar10_ncsnpp_continuous.npz``: the reference
state dict's names and shapes, filled by ``testkit/seeded.py``), converted by the same code
as a real ``.pth`` (``models.port.from_torch_state_dict``) and written as a snapshot; then the README's
sample command runs as a subprocess and is timed (process start and compilation included), and the
sampling itself is timed apart inside one process (compile, then one timed run).

    python -m benchmarks.pipeline.published_sample
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import ROOT, run_main, time_compiled, write

FIXTURE = os.path.join(ROOT, "tests", "reference", "data", "pytorch_ve_cifar10_ncsnpp_continuous.npz")
CONFIG = "configs/ve/cifar10.py"
BATCH, STEPS = 8, 50            # reverse diffusion + Langevin: 2 NFE per step, denoise off -> 100 NFE


def converted_workdir(workdir: str):
  """A workdir holding the converted seeded NCSN++ as its step-0 snapshot; returns the typed config."""
  import models
  from schema import load_config_file
  from testkit.seeded import seeded_state
  from training.checkpoint import Checkpointer
  from schema import parse_config
  from training.state import TrainState, get_optimizer

  with np.load(FIXTURE) as f:
    manifest = list(zip(f["names"].tolist(), json.loads(str(f["shapes"]))))
    seed = int(f["seed"])
  config = parse_config(load_config_file(os.path.join(ROOT, CONFIG)))
  params = models.port.from_torch_state_dict(models.get_model(config), (1, 32, 32, 3), seeded_state(manifest, seed))
  params = jax.tree.map(jnp.asarray, params)
  state = TrainState(step=jnp.asarray(0, jnp.int32), params=params, ema_params=params,
                     opt_state=get_optimizer(config.optim).init(params))
  shutil.rmtree(workdir, ignore_errors=True)
  checkpointer = Checkpointer(workdir)
  checkpointer.save(0, state, snapshot=True)
  checkpointer.close()
  return config, params


def main():
  import dataclasses

  import models
  import samplers
  import sde_lib
  from schema import sampler_options

  workdir = os.path.join(ROOT, "runs", "bench_published_sample")
  config, params = converted_workdir(workdir)
  overrides = [f"--config.eval.num_samples={BATCH}", f"--config.eval.batch_size={BATCH}",
               f"--config.sampling.pc.num_steps={STEPS}", "--config.sampling.denoise=False"]
  wall = run_main([f"--config={CONFIG}", f"--workdir={workdir}", "--mode=sample", *overrides])

  # The sampler alone, in this process: the same sampler and score as --mode sample.
  sampling = dataclasses.replace(config.sampling, denoise=False,
                                 pc=dataclasses.replace(config.sampling.pc, num_steps=STEPS))
  typed = dataclasses.replace(config, sampling=sampling)
  method, options = sampler_options(typed)
  sample_fn = samplers.get_sampler(sde_lib.get_sde(typed), (BATCH, 32, 32, 3), method, options)
  run = jax.jit(lambda key, p: sample_fn(key, models.score_fn_from_config(typed, p)))
  compile_s, run_s, (x, nfe) = time_compiled(run, jax.random.key(0), params, repeats=1)
  row = dict(model="NCSN++ ve/cifar10 (62.8M, converted from the reference layout)", batch=BATCH, nfe=int(nfe),
             sample_command_s=wall, compile_s=compile_s, sampling_s=run_s, s_per_nfe=run_s / int(nfe),
             finite=bool(np.all(np.isfinite(np.asarray(x)))))
  print(row)
  notes = ("`python -m benchmarks.pipeline.published_sample`: seeded weights in score_sde_pytorch's state-dict layout "
           "(the equivalence fixture's manifest), converted by models.port and written as a snapshot; "
           "sample_command_s: wall time of `main.py --config configs/ve/cifar10.py --mode sample` with "
           f"{BATCH} samples, PC reverse diffusion + Langevin, {STEPS} steps, denoise off (process start, "
           "checkpoint restore and compilation included); compile_s / sampling_s: the same sampler jitted "
           "in one process, compilation apart, one timed run. No published checkpoint was downloaded "
           "(none can be here): the weights are seeded, so the samples are noise; the timing is the network's.")
  print(write("published_sample", "Sampling a converted full-size NCSN++ on CPU", [row],
              ["model", "batch", "nfe", "sample_command_s", "compile_s", "sampling_s", "s_per_nfe", "finite"], notes))


if __name__ == "__main__":
  main()
