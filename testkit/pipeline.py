"""The tiny digits run: a configuration and its main.py flags that train in seconds on CPU."""

import importlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=())


def tiny_config(name="configs.vp.digits", **training):
  config = importlib.import_module(name).get_config()
  config.model.update(TINY)
  config.training.update(dict(batch_size=16, n_iters=2, snapshot_freq=2, snapshot_freq_for_preemption=1,
                              log_freq=1, eval_freq=1, snapshot_sampling=False), **training)
  return config


def tiny_flags(workdir, n_iters, config="configs/vp/digits.py"):
  flags = [f"--config={config}", f"--workdir={workdir}", f"--config.training.n_iters={n_iters}",
           "--config.training.batch_size=16", "--config.training.snapshot_freq=2",
           "--config.training.snapshot_freq_for_preemption=1", "--config.training.snapshot_sampling=False",
           "--config.model.nf=8", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
           "--config.model.attn_resolutions=()"]
  return flags
