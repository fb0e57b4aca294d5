"""Features for a "digits FID": a small classifier trained on the digits labels, shipped with the package.

Inception-v3 means nothing on 8x8 grey digits (and its weights cannot be downloaded here), so the
features are the hidden layer of an MLP trained on the train split's labels; its class predictions
give the samples' class histogram.

The digits FID's classifier (seed 0) is shipped as ``evaluation/digits_classifier_seed0.npz``, so every
evaluation, on any machine and scikit-learn version, measures with the same features and trains nothing
(training it took ~6 s of every fresh ``--mode eval``). Regenerate it with
``python -m tools.digits_classifier`` (scikit-learn of requirements-lock.txt; tests/test_digits_classifier_cache.py
checks that it equals a fresh training). Other seeds are trained and cached in the workdir. Both files are
plain arrays, never a pickle: a workdir may come from someone else, and reading it must not execute code
from it.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from data_lib.images import load_digits_arrays

CACHE_NAME = "digits_classifier.npz"
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_classifier_seed0.npz")
SHIPPED_SEED = 0
# The arrays of the cache, with their shapes: 64 -> 128 ReLU -> 10, and the labels of the 10 outputs.
SHAPES = {"coef_0": (64, 128), "intercept_0": (128,), "coef_1": (128, 10), "intercept_1": (10,), "classes": (10,)}
MAX_CACHE_BYTES = 1 << 20                       # of arrays; the real ones are ~77 kB


class DigitsFeatures:
  """An MLP (64 -> 128 ReLU -> 10) on [0, 1] digits; ``features`` is its 128-d hidden layer.

  Trained with scikit-learn (``MLPClassifier``, seed ``seed``) on the train split, then used as four
  numpy arrays: ``features`` and ``predict`` are its forward pass (``predict`` is the argmax of the
  output logits, which is the argmax of sklearn's softmax, so it equals ``MLPClassifier.predict``).

  Seed 0 (every digits metric's) reads the shipped arrays (``SHIPPED``, through ``read_cache``) and
  neither trains nor touches ``cache_dir``. For another seed, with ``cache_dir``, the arrays are saved
  in ``<cache_dir>/digits_classifier.npz`` and read back on later calls by ``safeio.untrusted.read_npz``
  (a regular file, ``allow_pickle=False``, at most 1 MiB of arrays as the zip declares them, checked
  before reading). The file is treated as untrusted: it is
  used only if it holds exactly the expected arrays (``coef_0`` [64, 128], ``intercept_0``
  [128], ``coef_1`` [128, 10], ``intercept_1`` [10] of float32/float64, finite; ``classes`` [10] of
  integers equal to 0..9). Any other file is not trusted: since it is only a cache, a warning names it
  and the classifier is retrained and the file overwritten (no error). A ``digits_classifier.pkl``
  left by older versions is never opened. A well-formed file holding other weights passes the
  checks: it can skew the digits metrics (``test_accuracy`` shows it) but runs no code; deleting it
  retrains.

  Arguments:
    cache_dir: directory of the cache of a seed other than 0 (created if needed), or None to train without
      caching.
    seed: sklearn's ``random_state`` for training; 0 (the default): the shipped arrays.

  Attributes:
    test_accuracy: the share of the test split's 297 digits ``predict`` gets right (as
      ``MLPClassifier.score``).
  """

  def __init__(self, cache_dir: str | None = None, seed: int = 0):
    path = os.path.join(cache_dir, CACHE_NAME) if cache_dir else None
    arrays = None
    if seed == SHIPPED_SEED:
      arrays = read_cache(SHIPPED)                 # the package's own file: a broken install fails here, one line
    elif path and os.path.exists(path):
      try:
        arrays = read_cache(path)
      except ValueError as e:
        logging.warning("%s; retraining the digits classifier and overwriting the cache", e)
    if arrays is None:
      arrays = _train(seed)
      if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"     # atomic: a reader never sees a half-written cache
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    self._w0, self._b0 = arrays["coef_0"], arrays["intercept_0"]
    self._w1, self._b1 = arrays["coef_1"], arrays["intercept_1"]
    _, _, x_test, y_test = load_digits_arrays()
    self.test_accuracy = float(np.mean(self.predict(x_test / 255.0) == y_test))

  @staticmethod
  def _flat(images) -> np.ndarray:
    return np.asarray(images, np.float64).reshape(len(images), -1)

  def features(self, images: np.ndarray) -> np.ndarray:
    """Hidden activations [N, 128] of images [N, 8, 8, 1] in [0, 1]."""
    return np.maximum(self._flat(images) @ self._w0 + self._b0, 0.0)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Predicted classes [N] (0..9) of images [N, 8, 8, 1] in [0, 1]."""
    return np.argmax(self.features(images) @ self._w1 + self._b1, axis=1)


def _train(seed: int) -> dict:
  """The MLP's arrays, trained by scikit-learn on the train split."""
  from sklearn.neural_network import MLPClassifier

  x_train, y_train, _, _ = load_digits_arrays()
  clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=seed)
  clf.fit(DigitsFeatures._flat(x_train / 255.0), y_train)
  arrays = {"coef_0": clf.coefs_[0], "intercept_0": clf.intercepts_[0], "coef_1": clf.coefs_[1],
            "intercept_1": clf.intercepts_[1], "classes": clf.classes_}
  _check(arrays)                                    # output index == label relies on classes 0..9
  return {name: np.asarray(a, np.int64 if name == "classes" else np.float64) for name, a in arrays.items()}


def read_cache(path: str) -> dict:
  """The arrays of a cache file, float64 (classes int64), after the checks of ``DigitsFeatures``.

  Raises:
    ValueError: one line naming ``path`` and what is wrong, if the file is not a valid cache.
  """
  from safeio.untrusted import read_npz

  try:
    arrays = read_npz(path, MAX_CACHE_BYTES)       # a regular file, no pickle, declared sizes capped
    if sorted(arrays) != sorted(SHAPES):
      raise ValueError(f"arrays {sorted(arrays)}, expected {sorted(SHAPES)}")
    _check(arrays)
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f"{path}: not a digits classifier cache ({_first_line(e).replace(path + ': ', '')})") from None
  return {name: a.astype(np.int64 if name == "classes" else np.float64) for name, a in arrays.items()}


def write_shipped(path: str = SHIPPED) -> dict:
  """Trains the seed-0 classifier and writes its arrays to ``path`` (the shipped file); returns them."""
  arrays = _train(SHIPPED_SEED)
  np.savez(path, **arrays)
  return arrays


def _check(arrays: dict) -> None:
  """Raises ValueError unless ``arrays`` has the shapes of SHAPES, finite floats and classes 0..9."""
  for name, shape in SHAPES.items():
    a = arrays[name]
    if not isinstance(a, np.ndarray):              # NpzFile returns a member that is not .npy as bytes
      raise ValueError(f"{name} is not an .npy array")
    if a.shape != shape:
      raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if name == "classes":
      if a.dtype.kind not in "iu" or not np.array_equal(a, np.arange(10)):
        raise ValueError(f"classes must be the integers 0..9, got {a.dtype} {a.tolist()}")
    elif a.dtype not in (np.float32, np.float64):
      raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    elif not np.all(np.isfinite(a)):
      raise ValueError(f"{name} has non-finite values")


def _first_line(e: Exception) -> str:
  return str(e).splitlines()[0] if str(e) else type(e).__name__
