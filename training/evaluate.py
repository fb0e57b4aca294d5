"""``--mode eval`` and ``--mode sample``: samples, bits/dim and feature distances of checkpoints.

Evaluation records each finished checkpoint in ``<workdir>/<eval_folder>/progress.json``; a killed
evaluation resumes with the first unfinished one.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import numpy as np

import samplers
from datasets.images import DIGITS_TEST_SIZE, get_dataset, load_digits_arrays
from training.checkpoint import Checkpointer
from training.images import save_grid, to_unit_range
from training.train import Setup, evaluation_state, make_sample_fn, setup


def draw_samples(sample_fn, params, n: int, batch_size: int, key: jax.Array):
  """n samples in model space [n, H, W, C] from a jitted ``sample_fn`` of ``make_sample_fn`` (batches of
  batch_size) and the NFE of one batch."""
  out, nfe = [], 0
  for i in range(math.ceil(n / batch_size)):
    x, nfe = sample_fn(jax.random.fold_in(key, i), params)
    out.append(np.asarray(x))
  return np.concatenate(out)[:n], int(nfe)


def _save_samples(config, x: np.ndarray, folder: str, name: str) -> str:
  os.makedirs(folder, exist_ok=True)
  np.savez_compressed(os.path.join(folder, f"{name}.npz"), samples=x)
  return save_grid(to_unit_range(x[:100], config.data.centered), os.path.join(folder, f"{name}.png"), scale=4)


def sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Samples from the newest checkpoint with config.sampling (no data set needed); returns the PNG path."""
  run = setup(config)
  state = evaluation_state(run, workdir)
  n = int(config.eval.num_samples)
  batch = min(int(config.eval.batch_size), n)
  x, nfe = draw_samples(make_sample_fn(config, run, batch), state.ema_params, n, batch,
                        jax.random.fold_in(run.sample_key, 10**6))
  name = f"{config.sampling.method}_step_{int(state.step)}"
  path = _save_samples(config, x, os.path.join(workdir, eval_folder), name)
  logging.info("%d samples with %s (NFE %d per batch) in %s", n, config.sampling.method, nfe, path)
  print(f"wrote {n} samples (NFE {nfe}) to {path}")
  return path


def make_logp_fn(config, run: Setup):
  """jitted ``(key, x, params) -> log p [B]``: the probability-flow likelihood of a model."""
  likelihood = samplers.get_likelihood_fn(run.sde, rtol=1e-5, atol=1e-5, eps=float(config.training.get("eps", 1e-5)))
  return jax.jit(lambda k, x, p: likelihood(k, run.score_fn(config, p), x)[0])


def bits_per_dim_on_test(config, run: Setup, fn, params, key: jax.Array, max_examples: int | None = None) -> float:
  """Mean bits/dim of the dequantised test split under ``fn = make_logp_fn(...)`` at ``params``."""
  data = get_dataset(config.data, "test", evaluation=True, seed=int(config.seed))
  dims = math.prod(run.image_shape)
  data_range = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
  values, seen = [], 0
  for i, batch in enumerate(data.epoch_batches(int(config.eval.batch_size))):
    values.append(np.asarray(samplers.bits_per_dim(fn(jax.random.fold_in(key, i), batch, params), dims,
                                                   data_range=data_range)))
    seen += len(batch)
    if max_examples and seen >= max_examples:
      break
  return float(np.mean(np.concatenate(values)))


def digits_scores(samples_unit: np.ndarray, cache_dir: str) -> dict:
  """Digits FID/KID of samples against the test split, the train-versus-test floor, the class histogram."""
  from evaluation import DigitsFeatures, feature_statistics, frechet_distance, kernel_distance

  feats = DigitsFeatures(cache_dir)
  x_train, _, x_test, _ = load_digits_arrays()
  f_test, f_samples = feats.features(x_test / 255.0), feats.features(samples_unit)
  f_train = feats.features(x_train[:DIGITS_TEST_SIZE] / 255.0)
  fid = lambda a, b: frechet_distance(*feature_statistics(a), *feature_statistics(b))
  hist = np.bincount(feats.predict(samples_unit), minlength=10) / len(samples_unit)
  return {"digits_fid": fid(f_samples, f_test), "digits_fid_floor_train_vs_test": fid(f_train, f_test),
          "digits_kid": kernel_distance(f_samples, f_test), "class_histogram": hist.round(4).tolist(),
          "classifier_test_accuracy": feats.test_accuracy}


def evaluate(config, workdir: str, eval_folder: str = "eval") -> dict:
  """Evaluates every snapshot not yet evaluated; returns {step: metrics}."""
  run = setup(config)
  folder = os.path.join(workdir, eval_folder)
  os.makedirs(folder, exist_ok=True)
  progress_path = os.path.join(folder, "progress.json")
  progress = json.load(open(progress_path)) if os.path.exists(progress_path) else {}
  checkpointer = Checkpointer(workdir)
  steps = checkpointer.snapshot_steps()
  checkpointer.close()
  if not steps:
    raise FileNotFoundError(f"no snapshot checkpoint in {os.path.abspath(workdir)}: run --mode train first")
  ev = config.eval
  # Built once: a new jit per checkpoint would recompile the sampler and the likelihood every time.
  n = int(ev.num_samples)
  batch = min(int(ev.batch_size), n)
  sample_fn = make_sample_fn(config, run, batch) if ev.enable_sampling else None
  logp_fn = make_logp_fn(config, run) if ev.enable_bpd else None
  for step in steps:
    if str(step) in progress:
      continue
    state = evaluation_state(run, workdir, step)
    key = jax.random.fold_in(run.sample_key, 10**7 + step)
    metrics = {"step": step}
    if ev.enable_sampling:
      x, nfe = draw_samples(sample_fn, state.ema_params, n, batch, key)
      metrics["nfe"] = nfe
      metrics["samples_png"] = _save_samples(config, x, folder, f"samples_step_{step}")
      if str(config.data.dataset).upper() == "DIGITS":
        metrics.update(digits_scores(to_unit_range(x, config.data.centered), folder))
      elif ev.get("inception_path"):
        metrics["fid"] = "not computed: the Inception-v3 extractor is not implemented yet"
      else:
        logging.warning("FID/KID skipped: set eval.inception_path to local Inception-v3 weights (none can be "
                        "downloaded at run time)")
    if ev.enable_bpd:
      metrics["bpd_test"] = bits_per_dim_on_test(config, run, logp_fn, state.ema_params, jax.random.fold_in(key, 1),
                                                 max_examples=int(ev.get("bpd_max_examples", 0)) or None)
    logging.info("checkpoint %d: %s", step, metrics)
    print(json.dumps(metrics))
    progress[str(step)] = metrics
    with open(progress_path + ".tmp", "w") as f:
      json.dump(progress, f, indent=1)
    os.replace(progress_path + ".tmp", progress_path)              # atomic: a kill leaves the old file
  return progress
