"""``--mode sample`` with ``sampling.condition``: inpainting and colorization of test images.

An unconditional model completes the unobserved part of the first ``eval.num_samples`` test images
(``samplers.get_inpainter`` / ``get_colorizer`` with ``sampling.inpaint.algorithm`` and the step
rule of ``sampling.method``). The run writes the completions, a picture whose rows are
observed | completions | truth, and, on the embedded digits, the share of completions the digits
classifier assigns to the original digit's label.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import numpy as np
from tqdm import tqdm

from datasets.images import get_dataset, load_digits_arrays
from samplers import inpaint
from training.config import as_config
from training.images import save_rows, to_unit_range
from training.train import evaluation_state, setup

CONDITION_KEY_OFFSET = 10**6 + 1          # fold_in(sample_key, .): apart from --mode sample's unconditional draws


def inpainter_arguments(config) -> tuple[str, str, dict]:
  """(method, algorithm, options) of ``samplers.get_inpainter`` from config.sampling.

  The step rule is sampling.method's section: "pc" (predictor, corrector, snr, corrector_steps,
  num_steps, langevin_step_rule) or "dpm_solver_pp" (num_steps, sigma_floor, rho), plus
  sampling.t_min and sampling.denoise. smc moves its particles by the predictor alone, so
  sampling.pc.corrector is not used with it.

  Raises:
    ValueError: a method or method setting the inpainter does not have (the message names the field).
  """
  s = config.sampling
  if s.method not in inpaint.INPAINT_METHODS:
    raise ValueError(f"sampling.method must be one of {list(inpaint.INPAINT_METHODS)} with sampling.condition="
                     f"{s.condition!r}, got {s.method!r}")
  if s.nfe:
    raise ValueError(f"sampling.nfe ({s.nfe}) is not used by sampling.condition={s.condition!r}: set the steps with "
                     f"sampling.{s.method}.num_steps and sampling.nfe=0")
  section = s.options
  options = {name: getattr(section, name) for name in inpaint.METHOD_DEFAULTS[s.method] if hasattr(section, name)}
  options.update(t_min=s.t_min, denoise=s.denoise)
  if s.method == "pc":
    if section.probability_flow:
      raise ValueError("sampling.pc.probability_flow must be False with sampling.condition (the inpainter's steps "
                       "are stochastic)")
    options["num_steps"] = options["num_steps"] or None
    if s.inpaint.algorithm == "smc":
      options["corrector"] = "none"
  else:
    for field, needed in (("grid", "edm"), ("order", 2)):
      if getattr(section, field, needed) != needed:
        raise ValueError(f"sampling.dpm_solver_pp.{field} must be {needed!r} with sampling.condition (the "
                         f"inpainter's DPM-Solver++ steps), got {getattr(section, field)!r}")
  algorithm = s.inpaint.algorithm
  options.update({name: getattr(s.inpaint, name) for name in inpaint.ALGORITHM_DEFAULTS[algorithm]})
  return s.method, algorithm, options


def conditional_sample(config, workdir: str, eval_folder: str = "samples") -> str:
  """Inpaints or colorizes the test split's first eval.num_samples images with the newest checkpoint;
  returns the picture's path. Writes <workdir>/<eval_folder>/<condition>_step_<N>.{npz,png,json}."""
  config = as_config(config)
  s = config.sampling
  method, algorithm, options = inpainter_arguments(config)
  run = setup(config)
  if len(run.data_shape) != 3:
    raise ValueError(f"sampling.condition={s.condition!r} needs image data, got data.dataset={config.data.dataset!r}")
  if s.condition == "colorize" and run.data_shape[-1] != 3:
    raise ValueError(f"sampling.condition='colorize' needs data.num_channels=3, got {run.data_shape[-1]}")
  state = evaluation_state(run, workdir)
  data = get_dataset(config.data, "test", evaluation=True, seed=int(config.seed))
  n = min(int(config.eval.num_samples), len(data))
  batch = min(int(config.eval.batch_size), n)
  truth = data.examples(range(n))
  shape = (batch,) + run.data_shape
  if s.condition == "inpaint":
    one = inpaint.image_mask(s.inpaint.mask, run.data_shape)          # [H, W, C]
    mask = np.broadcast_to(one, shape)
    build = inpaint.get_inpainter(run.sde, shape, method, algorithm, **options)
    fn = jax.jit(lambda key, params, known: build(key, run.score_fn(config, params), known, mask))
    observed_picture = lambda x: np.where(one > 0, x, -1.0 if config.data.centered else 0.0)   # unknown: black
  else:
    build = inpaint.get_colorizer(run.sde, shape, method, algorithm, **options)
    fn = jax.jit(lambda key, params, known: build(key, run.score_fn(config, params), known))
    observed_picture = lambda x: np.repeat(np.mean(x, axis=-1, keepdims=True), 3, axis=-1)
  key = jax.random.fold_in(run.sample_key, CONDITION_KEY_OFFSET)
  out, nfe = [], 0
  for i in tqdm(range(math.ceil(n / batch)), desc=s.condition, disable=jax.process_index() != 0):
    known = truth[i * batch:(i + 1) * batch]
    pad = batch - len(known)
    x, nfe = fn(jax.random.fold_in(key, i), state.ema_params, np.concatenate([known, known[:pad]]) if pad else known)
    out.append(np.asarray(x)[:len(known)])
  samples = np.concatenate(out)
  folder = os.path.join(workdir, eval_folder)
  os.makedirs(folder, exist_ok=True)
  name = f"{s.condition}_step_{int(state.step)}"
  np.savez_compressed(os.path.join(folder, f"{name}.npz"), samples=samples, truth=truth)
  shown = min(n, 16)
  unit = lambda x: to_unit_range(x, bool(config.data.centered))
  path = save_rows([unit(observed_picture(truth[:shown])), unit(samples[:shown]), unit(truth[:shown])],
                   os.path.join(folder, f"{name}.png"), scale=4)
  metrics = {"condition": s.condition, "algorithm": algorithm, "method": method, "nfe": int(nfe), "n": n,
             "step": int(state.step), "picture": path}
  if s.condition == "inpaint":
    metrics.update(mask=s.inpaint.mask, observed_error=float(np.max(np.abs((samples - truth) * one))))
  if str(config.data.dataset).upper() == "DIGITS":
    metrics.update(digits_agreement(unit(samples), n, os.path.join(workdir, "eval")))
  with open(os.path.join(folder, f"{name}.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  logging.info("%s: %s", name, metrics)
  print(json.dumps(metrics))
  return path


def digits_agreement(samples_unit: np.ndarray, n: int, cache_dir: str) -> dict:
  """The share of completions [n, 8, 8, 1] in [0, 1] the digits classifier assigns to the true label of
  the test digit they complete, beside the classifier's accuracy on the complete test digits."""
  from evaluation import DigitsFeatures

  feats = DigitsFeatures(cache_dir)
  _, _, _, y_test = load_digits_arrays()
  return {"digits_label_agreement": float(np.mean(feats.predict(samples_unit) == y_test[:n])),
          "classifier_test_accuracy": feats.test_accuracy}
