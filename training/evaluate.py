"""``--mode eval`` and ``--mode sample``: samples, bits/dim and feature distances of checkpoints.

Evaluation records each finished checkpoint in ``<workdir>/<eval_folder>/progress.json`` and, within
the checkpoint being evaluated, each finished round (a batch of samples or of bits/dim) in
``rounds_step_<N>/``; a killed evaluation resumes with the first unfinished round. The samples' metrics
come from the data set's scorer (``evaluation.scorer_for``: mode metrics, digits FID, FID / KID / IS).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import models
import samplers
from safeio.untrusted import read_npz
from data_lib.images import get_dataset, is_image_data
from evaluation import scorer_for
from evaluation.scorers import MAX_CACHE_BYTES, split_batches
from schema import as_config, likelihood_options
from training.checkpoint import Checkpointer
from training.images import save_samples_picture
from training.train import Setup, evaluation_state, make_sample_fn, setup


def _resumable(path: str | None, compute) -> dict:
  """``compute()`` (a dict of arrays), or what an earlier call saved at ``path``: finished rounds of a
  killed evaluation are loaded, not redone. The file is written atomically (a kill leaves none)."""
  if path and os.path.exists(path):
    return read_npz(path, MAX_CACHE_BYTES)
  out = compute()
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
  return out


def draw_samples(sample_fn, params, n: int, batch_size: int, key: jax.Array, rounds_dir: str | None = None):
  """n samples in model space [n, H, W, C] from a jitted ``sample_fn`` of ``make_sample_fn`` (rounds of
  batch_size, round i with key fold_in(key, i)) and the NFE of one round. With ``rounds_dir`` each
  round is saved there as it finishes, and rounds already there are reused."""

  def one_round(i):
    x, nfe = sample_fn(jax.random.fold_in(key, i), params)
    return {"x": np.asarray(x), "nfe": np.asarray(nfe)}

  out, nfe = [], 0
  for i in tqdm(range(math.ceil(n / batch_size)), desc="sampling", disable=jax.process_index() != 0):
    done = _resumable(rounds_dir and os.path.join(rounds_dir, f"round_{i}.npz"), lambda: one_round(i))
    out.append(done["x"])
    nfe = int(done["nfe"])
  return np.concatenate(out)[:n], nfe


def _save_samples(config, x: np.ndarray, folder: str, name: str) -> str:
  os.makedirs(folder, exist_ok=True)
  np.savez_compressed(os.path.join(folder, f"{name}.npz"), samples=x)
  return save_samples_picture(x, config.data, os.path.join(folder, f"{name}.png"))


def sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Samples from the newest checkpoint with config.sampling (no data set needed); returns the PNG path.

  With sampling.condition "inpaint" or "colorize" it completes test images instead
  (``training.conditional.conditional_sample``); with "class" it samples given classes
  (``training.conditional.class_sample``)."""
  config = as_config(config)
  if config.sampling.condition == "class":
    from training.conditional import class_sample
    return class_sample(config, workdir, eval_folder)
  if config.sampling.condition != "none":
    from training.conditional import conditional_sample
    return conditional_sample(config, workdir, eval_folder)
  run = setup(config)
  state = evaluation_state(run, workdir)
  n = int(config.eval.num_samples)
  batch = min(int(config.eval.batch_size), n)
  x, nfe = draw_samples(make_sample_fn(run, batch), state.ema_params, n, batch,
                        jax.random.fold_in(run.sample_key, SAMPLE_MODE_KEY_OFFSET))
  name = f"{config.sampling.method}_step_{int(state.step)}"
  path = _save_samples(config, x, os.path.join(workdir, eval_folder), name)
  logging.info("%d samples with %s (NFE %d per batch) in %s", n, config.sampling.method, nfe, path)
  print(f"wrote {n} samples (NFE {nfe}) to {path}")
  return path


def make_logp_fn(run: Setup):
  """jitted ``(key, x, params) -> log p [B]``: the probability-flow likelihood of a model."""
  likelihood = samplers.get_likelihood_fn(run.sde, **likelihood_options(run.config))
  return jax.jit(lambda k, x, p: likelihood(k, run.score_fn(p), x)[0])


def bits_per_dim_on_split(config, run: Setup, fn, params, key: jax.Array, max_examples: int | None = None,
                          rounds_dir: str | None = None) -> float:
  """Mean bits/dim of the dequantised ``eval.bpd_dataset`` split under ``fn = make_logp_fn(...)`` at
  ``params`` (each batch's values saved in and reused from ``rounds_dir``, like ``draw_samples``)."""
  data = get_dataset(config.data, config.eval.bpd_dataset, evaluation=True, seed=int(config.seed))
  dims = math.prod(run.data_shape)
  data_range = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
  values = []
  batches = split_batches(data, int(config.eval.batch_size), max_examples)
  total = math.ceil(min(max_examples or len(data), len(data)) / int(config.eval.batch_size))
  for i, batch in enumerate(tqdm(batches, desc="bits/dim", total=total, disable=jax.process_index() != 0)):
    bpd = lambda: {"bpd": np.asarray(samplers.bits_per_dim(fn(jax.random.fold_in(key, i), batch, params), dims,
                                                           data_range=data_range))}
    values.append(_resumable(rounds_dir and os.path.join(rounds_dir, f"bpd_{i}.npz"), bpd)["bpd"])
  return float(np.mean(np.concatenate(values)))


def mixture_nll(config, run: Setup, fn, params, key: jax.Array, max_examples: int | None = None) -> dict:
  """Toy data: mean negative log-likelihood (nats per dimension) of the test sample under the model
  (``fn = make_logp_fn(...)``) and, exactly, under the data's perturbed density p_eps."""
  from data_lib.toy import get_mixture

  mixture, data = get_mixture(config.data), get_dataset(config.data, "test", seed=int(config.seed))
  eps = config.eval.bpd_t_min                                    # the likelihood's time floor
  model, exact = [], []
  for i, batch in enumerate(split_batches(data, int(config.eval.batch_size), max_examples)):
    model.append(np.asarray(fn(jax.random.fold_in(key, i), batch, params)))
    exact.append(np.asarray(mixture.log_prob_t(batch, np.full(len(batch), eps, np.float32), run.sde)))
  dims = run.data_shape[0]
  return {"nll_test": -float(np.mean(np.concatenate(model))) / dims,
          "nll_test_exact": -float(np.mean(np.concatenate(exact))) / dims}


def select_snapshots(steps: list[int], snapshot_freq: int, begin_ckpt: int, end_ckpt: int) -> list[int]:
  """The snapshot steps whose checkpoint number ceil(step / snapshot_freq) is in [begin_ckpt, end_ckpt]
  (score_sde's eval.begin_ckpt / eval.end_ckpt).

  Raises:
    ValueError: none is (the message lists the snapshots there are).
  """
  chosen = [s for s in steps if begin_ckpt <= -(-s // snapshot_freq) <= end_ckpt]
  if not chosen:
    raise ValueError(f"eval.begin_ckpt={begin_ckpt}, eval.end_ckpt={end_ckpt} select no snapshot: there are "
                     f"checkpoints {[-(-s // snapshot_freq) for s in steps]} (steps {steps}, "
                     f"training.snapshot_freq={snapshot_freq})")
  return chosen


# Key streams of evaluation, apart from training's: snapshot grids use fold_in(sample_key, step).
EVAL_KEY_OFFSET = 10**7          # checkpoint `step` is evaluated with fold_in(sample_key, EVAL_KEY_OFFSET + step)
SAMPLE_MODE_KEY_OFFSET = 10**6   # --mode sample draws with fold_in(sample_key, SAMPLE_MODE_KEY_OFFSET)
BPD_STREAM, METRIC_STREAM, LOSS_STREAM = 1, 2, 3   # fold_in(checkpoint key, stream) for each kind of randomness


def evaluation_loss(config, run: Setup, state, key: jax.Array) -> float:
  """The training objective of the EMA parameters, averaged over the test split (eval.batch_size
  batches of the seeded test order covering it once; score_sde's eval loss)."""
  from training import step as step_lib
  from training.train import host_batch, make_step_fn, stack_batches

  data = get_dataset(config.data, "test", seed=config.seed + 1)
  batch = config.eval.batch_size - config.eval.batch_size % run.mesh.devices.size or run.mesh.devices.size
  eval_fn = step_lib.shard_step(make_step_fn(run, train=False), run.mesh, train=False)
  put = lambda i: step_lib.put_batches(stack_batches([host_batch(config, data, i, batch)]), run.mesh)
  losses = [np.asarray(eval_fn(state, put(i), jax.random.fold_in(key, i))["loss"])
            for i in range(math.ceil(len(data) / batch))]
  return float(np.mean(losses))


CLASSIFIER_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)     # fractions of T where a classifier's test accuracy is reported


def classifier_accuracy(config, run: Setup, params, key: jax.Array) -> dict:
  """Test accuracy of a noise-conditional classifier on x_t ~ p_t(x_t | x_0) at t = t_min + f (T - t_min) for
  each f in CLASSIFIER_TIMES (one draw of the noise per test image, batches of eval.batch_size):
  {"accuracy_t<f>": share}."""
  data = get_dataset(config.data, "test", evaluation=False, seed=config.seed + 1)

  @jax.jit
  def correct(params, x, y, t, key):
    a, s = run.sde.marginal_coefs(t)
    x_t = a[:, None, None, None] * x + s[:, None, None, None] * jax.random.normal(key, x.shape)   # x_t = a x + s z
    logits = models.classifier.get_logits_fn(run.sde, run.apply_fn, params, continuous=config.training.continuous)
    return jnp.sum(jnp.argmax(logits(x_t, t), axis=-1) == y)

  n, batch = len(data), int(config.eval.batch_size)
  out = {}
  for i, f in enumerate(CLASSIFIER_TIMES):
    t = config.training.t_min + f * (run.sde.T - config.training.t_min)
    hits = 0
    for start in range(0, n, batch):
      idx = range(start, min(start + batch, n))
      hits += int(correct(params, data.examples(idx), data.labels(idx), jnp.full((len(idx),), t),
                          jax.random.fold_in(jax.random.fold_in(key, i), start)))
    out[f"accuracy_t{f:g}"] = hits / n
  return out


def evaluation_splits(config) -> list[str]:
  """The data splits ``evaluate`` reads for its metrics (the test loss, bits/dim, a classifier's
  accuracy; not the cached FID reference statistics)."""
  scores = config.training.task == "score"
  ev = config.eval
  splits = ["test"] if ev.enable_loss or not scores else []
  if ev.enable_bpd and scores:
    splits.append(ev.bpd_dataset if is_image_data(config.data) else "test")
  return sorted(set(splits))


def evaluate(config, workdir: str, eval_folder: str = "eval") -> dict:
  """Evaluates every selected snapshot (eval.begin_ckpt..end_ckpt) not yet evaluated; returns {step: metrics}.

  The data splits it reads are opened first (``evaluation_splits``): bad data fails before the network
  is built and before anything is written."""
  config = as_config(config)
  for split in evaluation_splits(config):
    get_dataset(config.data, split, evaluation=True, seed=int(config.seed))
  run = setup(config)
  folder = os.path.join(workdir, eval_folder)
  os.makedirs(folder, exist_ok=True)
  progress_path = os.path.join(folder, "progress.json")
  progress = json.load(open(progress_path)) if os.path.exists(progress_path) else {}
  checkpointer = Checkpointer(workdir)
  all_steps = checkpointer.snapshot_steps()
  checkpointer.close()
  if not all_steps:
    raise FileNotFoundError(f"no snapshot checkpoint in {os.path.abspath(workdir)}: run --mode train first")
  ev = config.eval
  steps = select_snapshots(all_steps, config.training.snapshot_freq, ev.begin_ckpt, ev.end_ckpt)
  # Built once: a new jit per checkpoint would recompile the sampler and the likelihood every time.
  n = ev.num_samples
  batch = min(ev.batch_size, n)
  scores = config.training.task == "score"              # a classifier's run has accuracies instead
  sample_fn = make_sample_fn(run, batch) if ev.enable_sampling and scores else None
  logp_fn = make_logp_fn(run) if ev.enable_bpd and scores else None
  scorer = scorer_for(config, folder) if ev.enable_sampling and scores else None
  if scorer is not None:
    scorer.prepare()                                     # a bad eval.inception_path fails before sampling
  bpd_examples = ev.bpd_max_examples or None
  for step in steps:
    if str(step) in progress:
      continue
    state = evaluation_state(run, workdir, step)
    key = jax.random.fold_in(run.sample_key, EVAL_KEY_OFFSET + step)
    metrics = {"step": step}
    rounds = os.path.join(folder, f"rounds_step_{step}")            # finished rounds, kept until the step is done
    if ev.enable_loss:
      metrics["eval_loss"] = evaluation_loss(config, run, state, jax.random.fold_in(key, LOSS_STREAM))
    if config.training.task == "classifier":
      metrics.update(classifier_accuracy(config, run, state.ema_params, jax.random.fold_in(key, METRIC_STREAM)))
    elif ev.enable_sampling:
      x, nfe = draw_samples(sample_fn, state.ema_params, n, batch, key, rounds_dir=rounds)
      metrics["nfe"] = nfe
      metrics["max_abs_sample"] = float(np.max(np.abs(x)))          # saturated samples show up here first
      metrics["samples_png"] = _save_samples(config, x, folder, f"samples_step_{step}")
      metrics.update(scorer.samples(x, jax.random.fold_in(key, METRIC_STREAM)))
    if logp_fn is not None and not is_image_data(config.data):
      metrics.update(mixture_nll(config, run, logp_fn, state.ema_params, jax.random.fold_in(key, BPD_STREAM),
                                 max_examples=bpd_examples))
    elif logp_fn is not None:
      metrics[f"bpd_{ev.bpd_dataset}"] = bits_per_dim_on_split(config, run, logp_fn, state.ema_params,
                                                               jax.random.fold_in(key, BPD_STREAM),
                                                               max_examples=bpd_examples, rounds_dir=rounds)
    logging.info("checkpoint %d: %s", step, metrics)
    print(json.dumps(metrics))
    progress[str(step)] = metrics
    with open(progress_path + ".tmp", "w") as f:
      json.dump(progress, f, indent=1)
    os.replace(progress_path + ".tmp", progress_path)              # atomic: a kill leaves the old file
    shutil.rmtree(rounds, ignore_errors=True)
  return progress
