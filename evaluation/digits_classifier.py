"""Features for a "digits FID": a small classifier trained on the digits labels, cached in the workdir.

Inception-v3 means nothing on 8x8 grey digits (and its weights cannot be downloaded here), so the
features are the hidden layer of an MLP trained on the train split's labels; its class predictions
give the samples' class histogram.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from datasets.images import load_digits_arrays


class DigitsFeatures:
  """An MLP (64 -> 128 ReLU -> 10) on [0, 1] digits; ``features`` is its 128-d hidden layer."""

  def __init__(self, cache_dir: str | None = None, seed: int = 0):
    path = os.path.join(cache_dir, "digits_classifier.pkl") if cache_dir else None
    if path and os.path.exists(path):
      with open(path, "rb") as f:
        self.clf = pickle.load(f)
    else:
      from sklearn.neural_network import MLPClassifier

      x_train, y_train, x_test, y_test = load_digits_arrays()
      self.clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=seed)
      self.clf.fit(self._flat(x_train / 255.0), y_train)
      if path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(path, "wb") as f:
          pickle.dump(self.clf, f)
    _, _, x_test, y_test = load_digits_arrays()
    self.test_accuracy = float(self.clf.score(self._flat(x_test / 255.0), y_test))

  @staticmethod
  def _flat(images) -> np.ndarray:
    return np.asarray(images, np.float64).reshape(len(images), -1)

  def features(self, images: np.ndarray) -> np.ndarray:
    """Hidden activations [N, 128] of images [N, 8, 8, 1] in [0, 1]."""
    h = self._flat(images) @ self.clf.coefs_[0] + self.clf.intercepts_[0]
    return np.maximum(h, 0.0)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Predicted classes [N] of images [N, 8, 8, 1] in [0, 1]."""
    return self.clf.predict(self._flat(images))
