"""The named image data sets: tensorflow-datasets sources (read through ``tfds.data_source``, no
TensorFlow needed; prepared on disk beforehand, never downloaded) and scikit-learn's embedded 8x8 digits,
each a random-access source of {"image": uint8 [H, W, C], "label": ...} records."""

from __future__ import annotations

import os

import numpy as np

from data_lib.errors import DatasetNotFoundError

# name -> (tensorflow-datasets name, image side, channels, train split, test split)
TFDS = {
    "CIFAR10": ("cifar10", 32, 3, "train", "test"),
    "SVHN": ("svhn_cropped", 32, 3, "train", "test"),
    "CELEBA": ("celeb_a", 64, 3, "train", "validation"),
    "LSUN": ("lsun/church_outdoor", 256, 3, "train", "validation"),
}
DIGITS_TEST_SIZE = 297           # a fixed split of scikit-learn's 1,797 digits: 1,500 train, 297 test
DIGITS_MAX = 16                  # digits pixels are integers 0..16


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-learn's bundled 8x8 digits as (train images, train labels, test images, test labels).

  Images are uint8 [N, 8, 8, 1] on 0..255 (the 17 grey levels 0..16 scaled by 255/16); the split
  is a fixed permutation (seed 0), 1,500 train and 297 test.
  """
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = np.round(digits.images * (255.0 / DIGITS_MAX)).astype(np.uint8)[..., None]
  order = np.random.default_rng(0).permutation(len(images))
  test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
  return images[train], digits.target[train], images[test], digits.target[test]


def tfds_name(name: str, category: str = "") -> str:
  """The tensorflow-datasets name of data set ``name``; LSUN's ``data.category`` picks its config
  (``lsun/bedroom``; "" keeps church_outdoor), as score_sde's ``data.category`` does."""
  if name == "LSUN" and category:
    return f"lsun/{category}"
  return TFDS[name][0]


def _tfds_source(name: str, split: str, data_dir: str, category: str = ""):
  import tensorflow_datasets as tfds

  tfds_name_ = tfds_name(name, category)
  where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  try:
    return tfds.data_source(tfds_name_, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"; the user needs one message
    raise DatasetNotFoundError(
        f"data set {name} ({tfds_name_!r}, split {split!r}) is not prepared in {where}: on a machine with "
        f"internet run `tfds build {tfds_name_} --data_dir DIR --file_format array_record`, copy DIR here and "
        f"pass --config.data.data_dir=DIR ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


class _ArraySource:
  """A numpy array [N, H, W, C] with the random-access interface of a tfds data source."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    if self.labels is None:
      return {"image": self.images[i]}
    return {"image": self.images[i], "label": self.labels[i]}
