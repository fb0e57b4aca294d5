"""``--mode eval`` and ``--mode sample``: samples, bits/dim and feature distances of checkpoints.

Evaluation records each finished checkpoint in ``<workdir>/<eval_folder>/progress.json`` and, within
the checkpoint being evaluated, each finished round (a batch of samples or of bits/dim) in
``rounds_step_<N>/``; a killed evaluation resumes with the first unfinished round.
"""

from __future__ import annotations

import dataclasses
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
from models.untrusted import read_npz
from datasets.images import DIGITS_TEST_SIZE, get_dataset, is_image_data, load_digits_arrays
from schema import as_config, likelihood_options
from training.checkpoint import Checkpointer
from training.images import save_samples_picture, to_unit_range
from training.train import Setup, evaluation_state, make_sample_fn, setup

# The eval folder's caches (sampling rounds, FID statistics) may come with a workdir from someone else:
# read without pickle, their declared sizes capped before reading.
MAX_CACHE_BYTES = 4 << 30


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


def _split_batches(data, batch_size: int, max_examples: int | None):
  """The split in order, in batches, stopping after ``max_examples`` examples (None: all)."""
  seen = 0
  for batch in data.epoch_batches(batch_size):
    batch = batch[:max_examples - seen] if max_examples else batch
    yield batch
    seen += len(batch)
    if max_examples and seen >= max_examples:
      return


def bits_per_dim_on_split(config, run: Setup, fn, params, key: jax.Array, max_examples: int | None = None,
                          rounds_dir: str | None = None) -> float:
  """Mean bits/dim of the dequantised ``eval.bpd_dataset`` split under ``fn = make_logp_fn(...)`` at
  ``params`` (each batch's values saved in and reused from ``rounds_dir``, like ``draw_samples``)."""
  data = get_dataset(config.data, config.eval.bpd_dataset, evaluation=True, seed=int(config.seed))
  dims = math.prod(run.data_shape)
  data_range = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
  values = []
  batches = _split_batches(data, int(config.eval.batch_size), max_examples)
  total = math.ceil(min(max_examples or len(data), len(data)) / int(config.eval.batch_size))
  for i, batch in enumerate(tqdm(batches, desc="bits/dim", total=total, disable=jax.process_index() != 0)):
    bpd = lambda: {"bpd": np.asarray(samplers.bits_per_dim(fn(jax.random.fold_in(key, i), batch, params), dims,
                                                           data_range=data_range))}
    values.append(_resumable(rounds_dir and os.path.join(rounds_dir, f"bpd_{i}.npz"), bpd)["bpd"])
  return float(np.mean(np.concatenate(values)))


def mixture_scores(config, samples: np.ndarray, key: jax.Array) -> dict:
  """Toy data: the samples' mode metrics (``GaussianMixture.mode_metrics``) and the 99th percentile of
  the same metrics over 200 exact samples of the same size (the sampling-noise floor)."""
  from datasets.toy import get_mixture

  mixture = get_mixture(config.data)
  floor = mixture.metric_floor(key, len(samples))
  return {**{f"mode_{k}": v for k, v in mixture.mode_metrics(samples).items()},
          **{f"mode_{k}_floor_p99": v for k, v in floor.items()}}


def mixture_nll(config, run: Setup, fn, params, key: jax.Array, max_examples: int | None = None) -> dict:
  """Toy data: mean negative log-likelihood (nats per dimension) of the test sample under the model
  (``fn = make_logp_fn(...)``) and, exactly, under the data's perturbed density p_eps."""
  from datasets.toy import get_mixture

  mixture, data = get_mixture(config.data), get_dataset(config.data, "test", seed=int(config.seed))
  eps = config.eval.bpd_t_min                                    # the likelihood's time floor
  model, exact = [], []
  for i, batch in enumerate(_split_batches(data, int(config.eval.batch_size), max_examples)):
    model.append(np.asarray(fn(jax.random.fold_in(key, i), batch, params)))
    exact.append(np.asarray(mixture.log_prob_t(batch, np.full(len(batch), eps, np.float32), run.sde)))
  dims = run.data_shape[0]
  return {"nll_test": -float(np.mean(np.concatenate(model))) / dims,
          "nll_test_exact": -float(np.mean(np.concatenate(exact))) / dims}


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


def reference_inception_statistics(config, extractor, cache_dir: str) -> dict:
  """Inception pool-feature mean [2048], covariance [2048, 2048] and up to eval.kid_reference_examples
  features of the data set's ``eval.fid_reference_split`` (cached in cache_dir: computed once per run)."""
  ev = config.eval
  split, limit = ev.fid_reference_split, ev.fid_reference_examples
  name = f"inception_reference_{str(config.data.dataset).lower()}_{split}_{limit or 'all'}.npz"
  path = os.path.join(cache_dir, name)
  if not os.path.exists(path):
    from evaluation import feature_statistics

    # The reference is the data itself: in order, not flipped, not dequantised.
    data = dataclasses.replace(get_dataset(config.data, split, evaluation=True, seed=int(config.seed)), dequantize=False)
    total = min(limit or len(data), len(data))
    batches = tqdm(_split_batches(data, int(ev.batch_size), limit or None), desc=f"Inception features of {split}",
                   total=math.ceil(total / int(ev.batch_size)), disable=jax.process_index() != 0)
    feats = np.concatenate([extractor(to_unit_range(b, config.data.centered))[0] for b in batches])
    mu, sigma = feature_statistics(feats)
    kid = feats[:ev.kid_reference_examples]
    np.savez(path + ".tmp.npz", mu=mu, sigma=sigma, kid_features=kid)
    os.replace(path + ".tmp.npz", path)
  return read_npz(path, MAX_CACHE_BYTES)


def inception_scores(config, samples_unit: np.ndarray, extractor, cache_dir: str) -> dict:
  """FID and KID of samples [N, H, W, C] in [0, 1] against the data set, and their Inception score."""
  from evaluation import feature_statistics, frechet_distance, inception_score, kernel_distance

  pool, logits = extractor(samples_unit)
  ref = reference_inception_statistics(config, extractor, cache_dir)
  mean_is, std_is = inception_score(logits)
  return {"fid": frechet_distance(*feature_statistics(pool), ref["mu"], ref["sigma"]),
          "kid": kernel_distance(pool, ref["kid_features"]), "inception_score": mean_is,
          "inception_score_std": std_is}


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


def sample_scorer(config, folder: str):
  """``score(samples) -> metrics`` for the data set's kind: the oracle's mode metrics (toys), digits
  FID/KID (the embedded digits), FID/KID/IS from the FID Inception (other images, if its weights
  are configured), or nothing."""
  kind = config.data.dataset
  if kind == "GMM":
    return lambda x, key: mixture_scores(config, x, key)
  if kind == "DIGITS":
    return lambda x, key: digits_scores(to_unit_range(x, config.data.centered), folder)
  if not config.eval.inception_path:
    from evaluation.inception import HOW_TO_GET
    logging.warning("FID/KID/IS skipped: eval.inception_path is not set. %s", HOW_TO_GET)
    return lambda x, key: {}
  from evaluation import InceptionFeatures
  extractor = InceptionFeatures(config.eval.inception_path, batch_size=config.eval.inception_batch_size)
  return lambda x, key: inception_scores(config, to_unit_range(x, config.data.centered), extractor, folder)


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
  score = sample_scorer(config, folder) if ev.enable_sampling and scores else None
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
      metrics.update(score(x, jax.random.fold_in(key, METRIC_STREAM)))
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
