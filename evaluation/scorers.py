"""Per-data-set scorers: the sample-quality metrics of each kind of data, picked once by ``scorer_for``.

A scorer answers three questions about model-space samples (``[-1, 1]`` images if ``data.centered``, else
``[0, 1]``; points for the toys), each with a dict of metrics ({} when the data has none):

* ``samples(x, key)``: unconditional samples (``--mode eval``);
* ``class_samples(x, classes)``: samples requested as ``classes`` (``--mode sample``, condition "class");
* ``completions(x, test_indices)``: completions of the test split's examples ``test_indices`` (inpainting,
  colorization).

``prepare()`` loads what ``samples`` needs (the Inception weights), so that a bad path fails before any
sampling. The kinds:

* ``MixtureScorer`` (the toy GMM): the samples' mode metrics beside the noise floor of exact samples;
* ``DigitsScorer`` (the embedded digits): a digits FID / KID from a small classifier's features, its class
  histogram, per-class FIDs of class-conditional samples, the label agreement of completions;
* ``InceptionScorer`` (other images, with ``eval.inception_path``): FID / KID / Inception score against the
  data set's reference statistics (cached in the cache folder);
* ``Scorer`` itself (anything else): no metrics (``NoScorer``, which says once why FID is skipped).

Scorers get the typed ``data`` / ``eval`` sections, samples and keys, never a network or a run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

import jax
import numpy as np
from tqdm import tqdm

from data_lib.images import DIGITS_TEST_SIZE, get_dataset, load_digits_arrays
from evaluation.digits_classifier import DigitsFeatures
from evaluation.fid import feature_statistics, frechet_distance, kernel_distance
from evaluation.pixels import to_unit_range

# The eval folder's caches (FID reference statistics) may come with a workdir from someone else: read
# without pickle, their declared sizes capped before reading.
MAX_CACHE_BYTES = 4 << 30


def split_batches(data, batch_size: int, max_examples: int | None):
  """The split in order, in batches, stopping after ``max_examples`` examples (None: all)."""
  seen = 0
  for batch in data.epoch_batches(batch_size):
    batch = batch[:max_examples - seen] if max_examples else batch
    yield batch
    seen += len(batch)
    if max_examples and seen >= max_examples:
      return


class Scorer:
  """No metrics: the base of every scorer (each method returns {})."""

  def prepare(self) -> None:
    """Loads what ``samples`` needs, so that a bad configuration fails before sampling."""

  def samples(self, x: np.ndarray, key: jax.Array) -> dict:
    """Metrics of unconditional model-space samples x [N, ...]; ``key`` for any randomness of the metric."""
    return {}

  def class_samples(self, x: np.ndarray, classes: np.ndarray) -> dict:
    """Metrics of model-space samples x [N, ...] requested as ``classes`` [N]."""
    return {}

  def completions(self, x: np.ndarray, test_indices: np.ndarray) -> dict:
    """Metrics of model-space completions x [N, ...] of the test split's examples ``test_indices`` [N]."""
    return {}


class NoScorer(Scorer):
  """Image data without a feature network: no metrics; ``prepare`` says why FID/KID/IS are skipped."""

  def prepare(self) -> None:
    from evaluation.inception import HOW_TO_GET
    logging.warning("FID/KID/IS skipped: eval.inception_path is not set. %s", HOW_TO_GET)


# ------------------------------------------------------------------------------------------- toys
def mixture_scores(mixture, samples: np.ndarray, key: jax.Array) -> dict:
  """Toy data: the samples' mode metrics (``GaussianMixture.mode_metrics``) and the 99th percentile of
  the same metrics over 200 exact samples of the same size (the sampling-noise floor)."""
  floor = mixture.metric_floor(key, len(samples))
  return {**{f"mode_{k}": v for k, v in mixture.mode_metrics(samples).items()},
          **{f"mode_{k}_floor_p99": v for k, v in floor.items()}}


class MixtureScorer(Scorer):
  """The toy Gaussian mixture (``data_lib.toy.get_mixture``): its mode metrics and their noise floor."""

  def __init__(self, mixture):
    self.mixture = mixture

  def samples(self, x, key):
    return mixture_scores(self.mixture, x, key)


# ------------------------------------------------------------------------------------------ digits
def digits_scores(samples_unit: np.ndarray, cache_dir: str) -> dict:
  """Digits FID/KID of samples against the test split, the train-versus-test floor, the class histogram."""
  feats = DigitsFeatures(cache_dir)
  x_train, _, x_test, _ = load_digits_arrays()
  f_test, f_samples = feats.features(x_test / 255.0), feats.features(samples_unit)
  f_train = feats.features(x_train[:DIGITS_TEST_SIZE] / 255.0)
  fid = lambda a, b: frechet_distance(*feature_statistics(a), *feature_statistics(b))
  hist = np.bincount(feats.predict(samples_unit), minlength=10) / len(samples_unit)
  return {"digits_fid": fid(f_samples, f_test), "digits_fid_floor_train_vs_test": fid(f_train, f_test),
          "digits_kid": kernel_distance(f_samples, f_test), "class_histogram": hist.round(4).tolist(),
          "classifier_test_accuracy": feats.test_accuracy}


def digits_class_scores(samples_unit: np.ndarray, classes: np.ndarray, cache_dir: str) -> dict:
  """Class-conditional digits metrics of samples [n, 8, 8, 1] in [0, 1] requested as ``classes`` [n].

  ``class_share``: the share the digits classifier assigns to the requested class. Per class c with
  samples: ``class_fid`` compares m of its samples with the train digits of class c, m being the number of
  test digits of class c (or of samples, if fewer), and ``class_fid_floor`` compares m test digits of class
  c with the same train digits, so both carry the same sample-size bias; ``class_fid_over_floor`` is the
  mean over classes of their ratio.
  """
  feats = DigitsFeatures(cache_dir)
  x_train, y_train, x_test, y_test = load_digits_arrays()
  predicted = feats.predict(samples_unit)
  fid = lambda a, b: frechet_distance(*feature_statistics(a), *feature_statistics(b))
  per_class, ratios = {}, []
  for c in np.unique(classes):
    mine = feats.features(samples_unit[classes == c])
    test = feats.features(x_test[y_test == c] / 255.0)
    m = min(len(mine), len(test))
    if m < 2:
      continue
    ref = feats.features(x_train[y_train == c] / 255.0)
    value, floor = fid(mine[:m], ref), fid(test[:m], ref)
    per_class[int(c)] = {"share": float(np.mean(predicted[classes == c] == c)), "fid": value, "floor": floor, "m": m}
    ratios.append(value / floor)
  return {"class_share": float(np.mean(predicted == classes)), "classifier_test_accuracy": feats.test_accuracy,
          "class_fid_over_floor": float(np.mean(ratios)) if ratios else float("nan"), "per_class": per_class}


def digits_agreement(samples_unit: np.ndarray, test_indices: np.ndarray, cache_dir: str) -> dict:
  """The share of completions [n, 8, 8, 1] in [0, 1] the digits classifier assigns to the true label of
  the test digit they complete (``test_indices`` [n]), beside the classifier's accuracy on the complete
  test digits."""
  feats = DigitsFeatures(cache_dir)
  _, _, _, y_test = load_digits_arrays()
  return {"digits_label_agreement": float(np.mean(feats.predict(samples_unit) == y_test[test_indices])),
          "classifier_test_accuracy": feats.test_accuracy}


class DigitsScorer(Scorer):
  """The embedded digits: metrics from the digits classifier (``DigitsFeatures``, cached in ``cache_dir``)."""

  def __init__(self, data, cache_dir: str):
    self.centered, self.cache_dir = bool(data.centered), cache_dir

  def samples(self, x, key):
    return digits_scores(to_unit_range(x, self.centered), self.cache_dir)

  def class_samples(self, x, classes):
    return digits_class_scores(to_unit_range(x, self.centered), classes, self.cache_dir)

  def completions(self, x, test_indices):
    return digits_agreement(to_unit_range(x, self.centered), np.asarray(test_indices), self.cache_dir)


# --------------------------------------------------------------------------------------- Inception
def reference_file_name(dataset: str, split: str, examples: int) -> str:
  """The file the FID reference statistics of ``split`` (its first ``examples``, 0: all) are cached under."""
  return f"inception_reference_{str(dataset).lower()}_{split}_{examples or 'all'}.npz"


def save_reference_statistics(path: str, features: np.ndarray, kid_examples: int) -> None:
  """Writes the reference statistics of Inception pool features [N, 2048] to ``path`` (atomically): mu
  [2048], sigma [2048, 2048] and the first ``kid_examples`` features (kid_features)."""
  mu, sigma = feature_statistics(features)
  np.savez(path + ".tmp.npz", mu=mu, sigma=sigma, kid_features=features[:kid_examples])
  os.replace(path + ".tmp.npz", path)


def reference_inception_statistics(data_config, eval_config, seed: int, extractor, cache_dir: str) -> dict:
  """Inception pool-feature mean [2048], covariance [2048, 2048] and up to eval.kid_reference_examples
  features of the data set's ``eval.fid_reference_split`` (cached in cache_dir: computed once per run)."""
  from safeio.untrusted import read_npz

  ev = eval_config
  split, limit = ev.fid_reference_split, ev.fid_reference_examples
  path = os.path.join(cache_dir, reference_file_name(data_config.dataset, split, limit))
  if not os.path.exists(path):
    # The reference is the data itself: in order, not flipped, not dequantised.
    data = dataclasses.replace(get_dataset(data_config, split, evaluation=True, seed=int(seed)), dequantize=False)
    total = min(limit or len(data), len(data))
    batches = tqdm(split_batches(data, int(ev.batch_size), limit or None), desc=f"Inception features of {split}",
                   total=math.ceil(total / int(ev.batch_size)), disable=jax.process_index() != 0)
    feats = np.concatenate([extractor(to_unit_range(b, data_config.centered))[0] for b in batches])
    save_reference_statistics(path, feats, ev.kid_reference_examples)
  return read_npz(path, MAX_CACHE_BYTES)


def inception_scores(data_config, eval_config, seed: int, samples_unit: np.ndarray, extractor, cache_dir: str) -> dict:
  """FID and KID of samples [N, H, W, C] in [0, 1] against the data set, and their Inception score."""
  from evaluation.inception import inception_score

  pool, logits = extractor(samples_unit)
  ref = reference_inception_statistics(data_config, eval_config, seed, extractor, cache_dir)
  mean_is, std_is = inception_score(logits)
  return {"fid": frechet_distance(*feature_statistics(pool), ref["mu"], ref["sigma"]),
          "kid": kernel_distance(pool, ref["kid_features"]), "inception_score": mean_is,
          "inception_score_std": std_is}


class InceptionScorer(Scorer):
  """Images with the FID Inception's weights (``eval.inception_path``): FID, KID and the Inception score of
  unconditional samples against the data set's ``eval.fid_reference_split`` (statistics cached in
  ``cache_dir``)."""

  def __init__(self, data, eval_config, seed: int, cache_dir: str):
    self.data, self.eval, self.seed, self.cache_dir = data, eval_config, int(seed), cache_dir
    self._extractor = None

  def prepare(self) -> None:
    """Loads the Inception weights (FileNotFoundError, ValueError: a bad eval.inception_path)."""
    if self._extractor is None:
      from evaluation.inception import InceptionFeatures
      self._extractor = InceptionFeatures(self.eval.inception_path, batch_size=self.eval.inception_batch_size)

  def samples(self, x, key):
    self.prepare()
    return inception_scores(self.data, self.eval, self.seed, to_unit_range(x, self.data.centered), self._extractor,
                            self.cache_dir)


def scorer_for(config, cache_dir: str) -> Scorer:
  """The scorer of ``config.data``'s kind (``config``: a typed ``schema.Config``; its data and eval
  sections and seed are read), caching what it computes (classifier weights, reference statistics) in
  ``cache_dir``."""
  data = config.data
  if data.dataset == "GMM":
    from data_lib.toy import get_mixture
    return MixtureScorer(get_mixture(data))
  if data.dataset == "DIGITS":
    return DigitsScorer(data, cache_dir)
  if config.eval.inception_path:
    return InceptionScorer(data, config.eval, config.seed, cache_dir)
  return NoScorer()


__all__ = ["Scorer", "NoScorer", "MixtureScorer", "DigitsScorer", "InceptionScorer", "scorer_for", "split_batches",
           "mixture_scores", "digits_scores", "digits_class_scores", "digits_agreement", "inception_scores",
           "reference_inception_statistics", "reference_file_name", "save_reference_statistics", "MAX_CACHE_BYTES"]
