"""``--mode sample`` with ``sampling.condition``: class-conditional samples, inpainting, colorization and
inverse problems.

``class``: ``eval.num_samples`` images of the requested classes, with any sampler of
``sampling.method`` and a guided score at ``sampling.guidance_scale`` (only at the noise levels of
``sampling.guidance_interval`` when it is set, the conditional score elsewhere): classifier-free guidance
(``samplers.classifier_free_score_fn``) of a class-conditional network (``model.num_classes > 0``,
trained with label dropout), or classifier guidance (``samplers.guided_score_fn``) of an unconditional
one by a noise-conditional classifier (``sampling.classifier_config`` / ``classifier_workdir``). The run writes the samples with their classes, a picture with one row per class
and the data set's class metrics (``evaluation.scorer_for(...).class_samples``; on the embedded digits, the
share the digits classifier assigns to the requested class and a per-class digits FID beside its floor).

``inpaint`` / ``colorize`` / ``inverse``: an unconditional model conditioned on an observation y = A x +
noise_std eps of the first ``eval.num_samples`` test images, all through one path (``solve_observed``:
``samplers.get_inverse_solver`` on the steps of ``sampling.method``). ``inpaint`` and ``colorize`` are two of
its operators, noise-free: the mask ``sampling.inpaint.mask`` and the grey level ("colour"), with the algorithm
and options of ``sampling.inpaint`` (``conditional_sample``); ``inverse`` takes the operator, its parameters,
``noise_std`` and the algorithm from ``sampling.inverse`` (``inverse_sample``). The run writes the samples, a
picture whose rows are observed | samples | truth, PSNR, consistency with y and the data set's completion
metrics (``...completions``; on the embedded digits, the share of completions the digits classifier assigns
to the original digit's label).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import models
import samplers
from data_lib.images import get_dataset
from evaluation import scorer_for
from samplers.observation import image_mask
from schema import (LABELLED_DATASETS, as_config, inpainter_arguments, inverse_arguments, load_config_file,
                    observation_arguments, parse_config, sampler_options)
from training.images import save_grid, save_rows, to_unit_range
from training.train import evaluation_state, setup

CONDITION_KEY_OFFSET = 10**6 + 1          # fold_in(sample_key, .): inpaint / colorize, apart from --mode sample's
CLASS_KEY_OFFSET = 10**6 + 2              # ... class-conditional draws
INVERSE_KEY_OFFSET = 10**6 + 3            # ... the inverse solver's draws
NOISE_KEY_OFFSET = 10**6 + 4              # ... the observation noise eps of y = A x + noise_std eps
CLASS_PICTURE_COLUMNS = 10                # samples shown per class


def in_rounds(fn, key: jax.Array, inputs: np.ndarray, batch: int, desc: str):
  """``fn(key_i, inputs[round i]) -> (x, nfe)`` over rounds of ``batch`` rows (the last one padded with copies
  of its first row, so one compiled shape serves every round; the padding's outputs are dropped), round i
  with key fold_in(key, i). Returns (outputs [len(inputs), ...], the NFE of one round)."""
  out, nfe = [], 0
  for i in tqdm(range(math.ceil(len(inputs) / batch)), desc=desc, disable=jax.process_index() != 0):
    chunk = inputs[i * batch:(i + 1) * batch]
    padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])
    x, nfe = fn(jax.random.fold_in(key, i), padded)
    out.append(np.asarray(x)[:len(chunk)])
  return np.concatenate(out), nfe


def requested_classes(n: int, class_label: int, num_classes: int) -> np.ndarray:
  """The class of each of n samples, int32 [n]: ``class_label``, or i mod num_classes when it is -1."""
  if class_label >= 0:
    return np.full(n, class_label, np.int32)
  return (np.arange(n) % num_classes).astype(np.int32)


def classifier_guidance(config, run):
  """(num_classes, ``log_likelihood(params, labels) -> log_likelihood_fn``, classifier EMA parameters) of the
  noise-conditional classifier of sampling.classifier_config / classifier_workdir.

  Raises:
    ValueError: the classifier is not a classifier run, or its SDE or data shape differ from the score model's.
  """
  s = config.sampling
  clf_config = parse_config(load_config_file(s.classifier_config, "sampling.classifier_config"))
  if clf_config.training.task != "classifier":
    raise ValueError(f"sampling.classifier_config={s.classifier_config!r} is not a classifier's config "
                     f"(training.task={clf_config.training.task!r})")
  for section, field in (("sde", "name"), ("training", "continuous")):
    mine, theirs = getattr(getattr(config, section), field), getattr(getattr(clf_config, section), field)
    if theirs != mine:
      raise ValueError(f"sampling.classifier_config: the classifier's {section}.{field} ({theirs!r}) differs from the "
                       f"score model's ({mine!r}): it must see the same noise")
  clf_run = setup(clf_config)
  if clf_run.data_shape != run.data_shape:
    raise ValueError(f"sampling.classifier_config: the classifier's data shape {clf_run.data_shape} differs from the "
                     f"score model's {run.data_shape}")
  state = evaluation_state(clf_run, s.classifier_workdir)

  def log_likelihood(params, labels):
    logits = models.classifier.get_logits_fn(clf_run.sde, clf_run.apply_fn, params,
                                             continuous=clf_config.training.continuous)
    return models.classifier.get_log_likelihood_fn(logits, labels)

  return clf_config.num_classes, log_likelihood, state.ema_params


def class_sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Samples eval.num_samples images of sampling.class_label (or every class in turn), with classifier-free
  guidance (a class-conditional network) or classifier guidance (sampling.classifier_config); returns the
  picture's path. Writes <workdir>/<eval_folder>/class_step_<N>.{npz,png,json}."""
  config = as_config(config)
  s = config.sampling
  run = setup(config)
  state = evaluation_state(run, workdir)
  num_classes = config.num_classes
  interval = s.guidance_interval                    # None: every noise level; else (sigma_lo, sigma_hi]
  if num_classes:                                   # classifier-free guidance (Ho & Salimans 2022)
    guidance = "classifier_free"

    def guided_score(params, labels):
      return samplers.classifier_free_score_fn(run.score_fn(params[0], class_labels=labels), run.score_fn(params[0]),
                                               s.guidance_scale, interval=interval, sde=run.sde)

    params = (state.ema_params,)
  else:                                             # classifier guidance (Song et al. 2021 sec. 5, eq. 14)
    guidance = "classifier"
    num_classes, log_likelihood, clf_params = classifier_guidance(config, run)
    if s.class_label >= num_classes:
      raise ValueError(f"sampling.class_label must be -1 or in 0 .. {num_classes - 1} (the classifier's classes), "
                       f"got {s.class_label}")

    def guided_score(params, labels):
      return samplers.guided_score_fn(run.score_fn(params[0]), log_likelihood(params[1], labels),
                                      s.guidance_scale, interval=interval, sde=run.sde)

    params = (state.ema_params, clf_params)
  n = int(config.eval.num_samples)
  batch = min(int(config.eval.batch_size), n)
  classes = requested_classes(n, s.class_label, num_classes)
  method, options = sampler_options(config)
  sampler = samplers.get_sampler(run.sde, (batch,) + run.data_shape, method, options)
  fn = jax.jit(lambda key, params, labels: sampler(key, guided_score(params, labels)))
  key = jax.random.fold_in(run.sample_key, CLASS_KEY_OFFSET)
  x, nfe = in_rounds(lambda k, labels: fn(k, params, labels), key, classes, batch, "class sampling")
  folder = os.path.join(workdir, eval_folder)
  os.makedirs(folder, exist_ok=True)
  name = f"class_step_{int(state.step)}"
  np.savez_compressed(os.path.join(folder, f"{name}.npz"), samples=x, classes=classes)
  unit = to_unit_range(x, bool(config.data.centered))
  metrics = {"condition": "class", "guidance": guidance, "guidance_scale": s.guidance_scale,
             "guidance_interval": list(interval) if interval else None, "method": s.method,
             "nfe": int(nfe), "n": n, "step": int(state.step)}
  if x.ndim == 4:
    shown = [unit[classes == c][:CLASS_PICTURE_COLUMNS] for c in np.unique(classes)]
    width = max(len(r) for r in shown)
    pad = lambda r: np.concatenate([r, np.ones((width - len(r),) + r.shape[1:], r.dtype)]) if len(r) < width else r
    metrics["picture"] = save_grid(np.concatenate([pad(r) for r in shown]), os.path.join(folder, f"{name}.png"),
                                   scale=4, cols=width)
  metrics.update(scorer_for(config, os.path.join(workdir, "eval")).class_samples(x, classes))
  with open(os.path.join(folder, f"{name}.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  logging.info("%s: %s", name, metrics)
  print(json.dumps(metrics))
  return metrics.get("picture", os.path.join(folder, f"{name}.npz"))


# ------------------------------------------------------------------------- conditioning on an observation
def conditional_sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Inpaints, colorizes or solves ``sampling.inverse`` for the test split's first eval.num_samples images
  with the newest checkpoint; returns the picture's path (or the npz's). Writes
  <workdir>/<eval_folder>/<condition>_step_<N>.{npz,png,json}.

  ``inpaint`` and ``colorize`` are inverse problems (``solve_observed``): the noise-free mask of
  ``sampling.inpaint.mask`` (``samplers.make_observation("mask", ...)``) and the noise-free grey level ("colour"),
  with the algorithm, method and options of ``sampling.inpaint`` (``schema.inpainter_arguments``). Their json
  adds ``mask`` and ``observed_error`` (inpaint: the largest |completion - truth| on observed pixels, 0: kept
  exactly) to the inverse metrics. ``inverse``: ``inverse_sample``.

  Raises:
    ValueError: not image data, colorize without 3 channels, or as ``solve_observed``.
  """
  config = as_config(config)
  s = config.sampling
  if s.condition == "inverse":
    return inverse_sample(config, workdir, eval_folder)
  method, algorithm, options = inpainter_arguments(config)
  run = setup(config)
  if len(run.data_shape) != 3:
    raise ValueError(f"sampling.condition={s.condition!r} needs image data, got data.dataset={config.data.dataset!r}")
  if s.condition == "colorize" and run.data_shape[-1] != 3:
    raise ValueError(f"sampling.condition='colorize' needs data.num_channels=3, got {run.data_shape[-1]}")
  operator, params = ("mask", {"mask": s.inpaint.mask}) if s.condition == "inpaint" else ("colour", {})
  observation = samplers.make_observation(operator, run.data_shape, 0.0, **params)
  extra = None
  if s.condition == "inpaint":
    one = image_mask(s.inpaint.mask, run.data_shape)                  # [H, W, C], 1: observed
    extra = lambda samples, truth: dict(mask=s.inpaint.mask,
                                        observed_error=float(np.max(np.abs((samples - truth) * one))))
  return solve_observed(config, run, observation, workdir=workdir, eval_folder=eval_folder, condition=s.condition,
                        operator=operator, params=params, method=method, algorithm=algorithm, options=options,
                        section="sampling.inpaint", key_offset=CONDITION_KEY_OFFSET, extra_metrics=extra)


def inverse_sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Solves y = A x + noise_std eps (``samplers.make_observation`` with sampling.inverse's operator, its
  parameters and noise_std) for the test split's first eval.num_samples images with the newest checkpoint by
  ``samplers.get_inverse_solver`` with sampling.inverse.algorithm on the steps of sampling.method
  (``solve_observed``); returns the picture's path (or the npz's). Writes
  <workdir>/<eval_folder>/inverse_step_<N>.{npz,png,json}.

  Raises:
    ValueError: a bad operator parameter or algorithm option (the message names sampling.inverse's field).
  """
  config = as_config(config)
  method, algorithm, options = inverse_arguments(config)
  operator, noise_std, params = observation_arguments(config)
  run = setup(config)
  try:
    observation = samplers.make_observation(operator, run.data_shape, noise_std, **params)
  except ValueError as e:
    raise _named(e, params, f"sampling.inverse.operator={operator!r}", "sampling.inverse") from None
  return solve_observed(config, run, observation, workdir=workdir, eval_folder=eval_folder, condition="inverse",
                        operator=operator, params=params, method=method, algorithm=algorithm, options=options,
                        section="sampling.inverse", key_offset=INVERSE_KEY_OFFSET)


def solve_observed(config, run, observation, *, workdir: str, eval_folder: str, condition: str, operator: str,
                   params: dict, method: str | None, algorithm: str, options: dict, section: str, key_offset: int,
                   extra_metrics=None) -> str:
  """The one path of every condition given an observation: builds ``samplers.get_inverse_solver(run.sde,
  shape, observation, algorithm, method, **options)``, observes the test split's first eval.num_samples images
  (``observe``), compiles the jitted solver once, runs it in rounds of eval.batch_size (``in_rounds``), writes
  <workdir>/<eval_folder>/<condition>_step_<N>.{npz,png,json} and computes the metrics.

  Keys: y of image i uses the noise eps_i ~ N(0, I) of fold_in(fold_in(sample key, NOISE_KEY_OFFSET), i),
  times noise_std (so every algorithm of a run's config sees the same y; noise-free, eps is drawn and
  multiplied by 0). The solver's round r uses fold_in(fold_in(sample key, ``key_offset``), r): inverse passes
  INVERSE_KEY_OFFSET; inpaint and colorize CONDITION_KEY_OFFSET.

  The npz holds samples, truth, y and ``observed`` (``observed_picture``: A^+ y); the picture's rows are
  observed | samples | truth (16 images at most). The json's metrics: ``nfe`` (network evaluations per image,
  particles included), ``m`` (observed coordinates), ``psnr`` (mean per-image PSNR of the samples to the
  truth in [0, 1] pixels; ``psnr_observed`` the same of ``observed``), ``consistency`` (noise_std > 0: the
  mean over images of ||y - A x|| / (noise_std sqrt(m)), ~1 for posterior samples; noise-free: the largest
  |y - A x|), ``seconds_per_image`` (run time after compilation over the images; ``compile_s`` apart),
  ``nonfinite_samples`` and, when every sample is finite, the data set's completion metrics (digits: the
  classifier's label agreement, and per-class digits FID over its floor through ``class_samples`` with the
  true labels).

  Arguments:
    config: the typed config.
    run: its ``training.train.setup``.
    observation: a ``samplers.Observation`` of samples [B, *run.data_shape].
    condition: names the files and the json's ``condition``.
    operator: reported as the json's ``operator``.
    params: reported as the json's ``params``.
    method: ``get_inverse_solver``'s method.
    algorithm: ``get_inverse_solver``'s algorithm.
    options: ``get_inverse_solver``'s options.
    section: the config section of the algorithm's options, named in error messages.
    key_offset: the solver's key offset (see Keys).
    extra_metrics: None, or ``(samples, truth) -> dict`` of json fields added to the metrics.

  Returns:
    The picture's path (the npz's for data that are not images).

  Raises:
    ValueError: a bad algorithm option or algorithm/method/noise pair (the message names ``section``).
  """
  data = get_dataset(config.data, "test", evaluation=True, seed=int(config.seed))
  n = min(int(config.eval.num_samples), len(data))
  batch = min(int(config.eval.batch_size), n)
  shape = (batch,) + run.data_shape
  try:
    solve = samplers.get_inverse_solver(run.sde, shape, observation, algorithm, method, **options)
  except ValueError as e:
    raise _named(e, options, f"{section}.algorithm={algorithm!r}, sampling.method={method!r}", section) from None
  state = evaluation_state(run, workdir)
  truth = data.examples(range(n))
  y, live = observe(observation, truth, jax.random.fold_in(run.sample_key, NOISE_KEY_OFFSET))
  fn = jax.jit(lambda key, params, y: solve(key, run.score_fn(params), y))
  key = jax.random.fold_in(run.sample_key, key_offset)
  start = time.perf_counter()
  compiled = fn.lower(key, state.ema_params, y[:batch]).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  samples, nfe = in_rounds(lambda k, rows: compiled(k, state.ema_params, rows), key, y, batch, condition)
  seconds = time.perf_counter() - start
  folder = os.path.join(workdir, eval_folder)
  os.makedirs(folder, exist_ok=True)
  name = f"{condition}_step_{int(state.step)}"
  observed = observed_picture(observation, y, truth.shape)
  np.savez_compressed(os.path.join(folder, f"{name}.npz"), samples=samples, truth=truth, y=y, observed=observed)
  unit = lambda x: to_unit_range(x, bool(config.data.centered))
  fitted = np.asarray(jax.jit(observation.forward)(jnp.asarray(samples)))
  noise_std = observation.noise_std
  metrics = {"condition": condition, "operator": operator, "noise_std": noise_std, "params": params,
             "algorithm": algorithm, "method": method,
             "options": {k: v for k, v in options.items() if k != "options"}, "nfe": int(nfe), "n": n,
             "step": int(state.step), "m": int(live.sum()),
             "psnr": float(np.mean(psnr(unit(samples), unit(truth)))),
             "psnr_observed": float(np.mean(psnr(unit(observed), unit(truth)))),
             "consistency": consistency(y, fitted, live, noise_std), "seconds_per_image": seconds / n,
             "compile_s": compile_s}
  if extra_metrics is not None:
    metrics.update(extra_metrics(samples, truth))
  path = os.path.join(folder, f"{name}.npz")
  if samples.ndim == 4:
    shown = min(n, 16)
    path = metrics["picture"] = save_rows([unit(observed[:shown]), unit(samples[:shown]), unit(truth[:shown])],
                                          os.path.join(folder, f"{name}.png"), scale=4)
  metrics["nonfinite_samples"] = int(np.sum(~np.isfinite(samples.reshape(n, -1)).all(axis=1)))
  if metrics["nonfinite_samples"]:                  # the feature metrics need finite images: reported as absent
    logging.warning("%d of %d samples are not finite: no data set metrics", metrics["nonfinite_samples"], n)
  else:
    scorer = scorer_for(config, os.path.join(workdir, "eval"))
    metrics.update(scorer.completions(samples, np.arange(n)))
    if config.data.dataset in LABELLED_DATASETS:
      per_class = scorer.class_samples(samples, data.labels(np.arange(n)))
      metrics.update({k: per_class[k] for k in ("class_fid_over_floor", "per_class") if k in per_class})
  with open(os.path.join(folder, f"{name}.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  logging.info("%s: %s", name, metrics)
  print(json.dumps(metrics))
  return path


# ------------------------------------------------------------------------------------- helpers
def observed_rows(observation, sample_shape: tuple, y_shape: tuple) -> np.ndarray:
  """1.0 where a coordinate of y [*y_shape] is observed (a nonzero row of A), else 0.0 (a mask's zeros).

  Row i of A is zero iff (A A^T r)_i = 0 for a random r (almost surely; exactly for a mask's zeros)."""
  r = jax.random.normal(jax.random.key(0), (1,) + tuple(y_shape))
  back = observation.transpose(r).reshape((1,) + tuple(sample_shape))          # A^T may return [1, d]
  return (np.abs(np.asarray(observation.forward(back))) > 0)[0].astype(np.float32)


def observe(observation, truth: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(y, observed rows): y = A x + noise_std eps of each test image, eps of image i drawn from fold_in(key, i)
  (so an image's observation depends neither on the batch nor on the number of images) and zero on A's
  zero rows."""
  clean = np.asarray(jax.jit(observation.forward)(jnp.asarray(truth)))
  live = observed_rows(observation, truth.shape[1:], clean.shape[1:])
  eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), clean.shape[1:]))(jnp.arange(len(truth)))
  return clean + observation.noise_std * np.asarray(eps) * live, live


def _named(error: ValueError, fields: dict, context: str, section: str) -> ValueError:
  """A library's message about one of the config ``section``'s ``fields`` as the config field's ("factor must
  ..." -> "sampling.inverse.factor must ..."); other messages after ``context``."""
  message = str(error)
  first = message.split(" ", 1)[0]
  if first in fields:
    return ValueError(f"{section}.{message}")
  return ValueError(f"{context}: {message}")


def observed_picture(observation, y: np.ndarray, shape: tuple) -> np.ndarray:
  """The observation as an image of the samples' ``shape``: A^+ y where the operator has a pseudo-inverse
  (masks, super-resolution, grey level, matrices), y itself when it has the samples' shape (the blurs), else
  A^T y."""
  if observation.pinv is None and tuple(y.shape) == tuple(shape):
    return np.asarray(y)
  back = observation.pinv if observation.pinv is not None else observation.transpose
  return np.asarray(jax.jit(back)(jnp.asarray(y))).reshape(shape)


def consistency(y: np.ndarray, fitted: np.ndarray, live: np.ndarray, noise_std: float) -> float:
  """How well samples explain y (``fitted`` = A x): noisy, the mean over images of ||y - A x|| / (noise_std
  sqrt(m)) over the m observed coordinates (~1 for posterior samples, << 1 overfits the noise); noise-free,
  the largest |y - A x|."""
  residual = ((y - fitted) * live).reshape(len(y), -1)
  if noise_std > 0:
    return float(np.mean(np.linalg.norm(residual, axis=1) / (noise_std * math.sqrt(float(live.sum())))))
  return float(np.max(np.abs(residual)))


def psnr(x_unit: np.ndarray, truth_unit: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of [0, 1] images (peak 1): 10 log10(1 / mse), [N] (mse floored at 1e-10: 100 dB)."""
  mse = np.mean((x_unit - truth_unit).reshape(len(x_unit), -1) ** 2, axis=1)
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))
