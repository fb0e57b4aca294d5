"""Image data: tensorflow-datasets sources (no TensorFlow needed) and the embedded digits.

A data set is a random-access source of uint8 images [H, W, C]. ``ImageData.batch(step)`` is a pure
function of (seed, step): the order is a fresh seeded permutation every epoch, so a resumed run sees
exactly the batches an uninterrupted one would, with no iterator state to checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

# name -> (tensorflow-datasets name, image side, channels, train split, test split)
TFDS = {
    "CIFAR10": ("cifar10", 32, 3, "train", "test"),
    "SVHN": ("svhn_cropped", 32, 3, "train", "test"),
    "CELEBA": ("celeb_a", 64, 3, "train", "validation"),
    "LSUN": ("lsun/church_outdoor", 256, 3, "train", "validation"),
}
DATASETS = sorted(list(TFDS) + ["DIGITS", "GMM"])
DIGITS_TEST_SIZE = 297           # a fixed split of scikit-learn's 1,797 digits: 1,500 train, 297 test
DIGITS_MAX = 16                  # digits pixels are integers 0..16


class DatasetNotFoundError(RuntimeError):
  """A data set that is not on disk; the message names it, the directory and the remedy."""


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


def _tfds_source(name: str, split: str, data_dir: str):
  import tensorflow_datasets as tfds

  tfds_name = TFDS[name][0]
  where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"; the user needs one message
    raise DatasetNotFoundError(
        f"data set {name} ({tfds_name!r}, split {split!r}) is not prepared in {where}: on a machine with "
        f"internet run `tfds build {tfds_name} --data_dir DIR --file_format array_record`, copy DIR here and "
        f"pass --config.data.data_dir=DIR ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


class _ArraySource:
  """A numpy array [N, H, W, C] with the random-access interface of a tfds data source."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i]}


@dataclasses.dataclass
class ImageData:
  """Deterministic batches of one split, preprocessed to float32 [B, H, W, C].

  Arguments:
    source: random access to {"image": uint8 [H, W, C]} records.
    image_size: side the images are centre-cropped and resized to (when they differ).
    centered: map to [-1, 1] (else [0, 1]).
    random_flip: flip horizontally with probability 1/2 (training).
    dequantize: add uniform noise u / 256 before scaling, for likelihoods ((255 x + u) / 256).
    seed: the order and augmentation seed.
  """

  source: object
  image_size: int
  centered: bool = False
  random_flip: bool = False
  dequantize: bool = False
  seed: int = 0

  def __len__(self):
    return len(self.source)

  def _load(self, index: int) -> np.ndarray:
    image = np.asarray(self.source[int(index)]["image"])
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[0] != self.image_size or image.shape[1] != self.image_size:
      image = _center_crop_resize(image, self.image_size)
    return image

  def indices(self, step: int, batch_size: int) -> np.ndarray:
    """Record indices of batch ``step``: positions step*B .. (step+1)*B - 1 of the epoch permutations."""
    n = len(self.source)
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(positions // n):
      sel = positions // n == epoch
      out[sel] = np.random.default_rng([self.seed, int(epoch)]).permutation(n)[positions[sel] % n]
    return out

  def batch(self, step: int, batch_size: int) -> np.ndarray:
    """The preprocessed batch number ``step``: float32 [batch_size, H, W, C]."""
    idx = self.indices(step, batch_size)
    images = np.stack([self._load(i) for i in idx]).astype(np.float32)
    rng = np.random.default_rng([self.seed, 1_000_003, step])
    if self.dequantize:
      images = (images + rng.uniform(size=images.shape)) / 256.0
    else:
      images = images / 255.0
    if self.random_flip:
      flip = rng.uniform(size=batch_size) < 0.5
      images[flip] = images[flip, :, ::-1]
    return (2.0 * images - 1.0 if self.centered else images).astype(np.float32)

  def epoch_batches(self, batch_size: int):
    """One pass over the split in order (evaluation), the last batch possibly smaller."""
    n = len(self.source)
    for start in range(0, n, batch_size):
      idx = range(start, min(start + batch_size, n))
      images = np.stack([self._load(i) for i in idx]).astype(np.float32)
      if self.dequantize:
        images = (images + np.random.default_rng([self.seed, start]).uniform(size=images.shape)) / 256.0
      else:
        images = images / 255.0
      yield (2.0 * images - 1.0 if self.centered else images).astype(np.float32)


def _center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image

  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = image[top:top + side, left:left + side]
  mode = "L" if crop.shape[-1] == 1 else "RGB"
  resized = Image.fromarray(crop.squeeze(-1) if mode == "L" else crop, mode).resize((size, size), Image.BICUBIC)
  return np.asarray(resized).reshape(size, size, crop.shape[-1])


def data_shape(data_config) -> tuple[int, ...]:
  """The shape of one example: (image_size, image_size, num_channels), or (dim,) for the toy "GMM"."""
  if str(data_config.dataset).upper() == "GMM":
    return (int(data_config.dim),)
  return (int(data_config.image_size), int(data_config.image_size), int(data_config.num_channels))


def is_image_data(data_config) -> bool:
  return str(data_config.dataset).upper() != "GMM"


def get_dataset(data_config, split: str = "train", *, evaluation: bool = False, seed: int = 0) -> ImageData:
  """The ``ImageData`` of config.data (fields: dataset, image_size, centered, random_flip,
  uniform_dequantization, data_dir) for ``split`` ("train" or "test"); for the toy ``"GMM"`` a
  ``datasets.toy.MixtureData`` (fields: dim, mixture, test_size) with the same interface.

  Raises:
    ValueError: an unknown data set or split (the valid ones are listed).
    DatasetNotFoundError: a tensorflow-datasets set that is not prepared on disk.
  """
  name = str(data_config.dataset).upper()
  if name not in DATASETS:
    raise ValueError(f"data.dataset must be one of {DATASETS}, got {data_config.dataset!r}")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if name == "GMM":
    from datasets.toy import MixtureData, get_mixture
    return MixtureData(get_mixture(data_config), seed=seed, split=int(split == "test"),
                       size=int(data_config.get("test_size", 4096)))
  if name == "DIGITS":
    x_train, _, x_test, _ = load_digits_arrays()
    source = _ArraySource(x_train if split == "train" else x_test)
  else:
    _, _, _, train_split, test_split = TFDS[name]
    source = _tfds_source(name, train_split if split == "train" else test_split, data_config.get("data_dir", ""))
  return ImageData(source, image_size=int(data_config.image_size), centered=bool(data_config.centered),
                   random_flip=bool(data_config.random_flip) and split == "train" and not evaluation,
                   dequantize=bool(data_config.get("uniform_dequantization", False)) or evaluation, seed=seed)
