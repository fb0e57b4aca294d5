"""Image data: the ``ImageData`` batches every image data set goes through, and the dispatch from
config.data to its source (``get_dataset``, ``data_shape``).

A data set is a random-access source of uint8 images [H, W, C]. ``ImageData.batch(step)`` is a pure
function of (seed, step): the order is a fresh seeded permutation every epoch, so a resumed run sees
exactly the batches an uninterrupted one would, with no iterator state to checkpoint. Every source goes
through the same preprocessing: centre crop + resize to ``data.image_size``, ``data.centered``, flips,
dequantisation.

The sources live next to this module:

* ``data_lib.standard``: the tensorflow-datasets sets (CIFAR10, SVHN, CELEBA, LSUN) and the embedded DIGITS;
* ``data_lib.own_data``: your own data (``data.path``), FOLDER (a directory of images) and ARRAY (an .npz),
  with their split and checks;
* ``data_lib.untrusted_images``: how image files we did not write are read (allowed decoders, pixel cap);
* ``data_lib.toy``: the toy ``"GMM"`` (a Gaussian mixture with the same interface).

Their public names are re-exported here (``from data_lib.images import load_digits_arrays`` etc.).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_lib.errors import DatasetNotFoundError
from data_lib.own_data import own_source
from data_lib.standard import TFDS, _ArraySource, _tfds_source, load_digits_arrays
# re-exported: the other public names of the source modules, importable from data_lib.images as before
from data_lib.own_data import (  # noqa: F401
    IMAGE_EXTENSIONS, NPZ_MAX_BYTES, OWN_CACHE_BYTES, OWN_SPLIT_SEED, OWN_TEST_DIVISOR, image_files, own_split_indices)
from data_lib.standard import DIGITS_MAX, DIGITS_TEST_SIZE, tfds_name  # noqa: F401
from data_lib.untrusted_images import IMAGE_FORMATS, MAX_IMAGE_PIXELS, convert_channels, read_image  # noqa: F401

OWN = ("FOLDER", "ARRAY")       # your own data, read from data.path
DATASETS = sorted(list(TFDS) + ["DIGITS", "GMM", *OWN])


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

  def labels(self, indices) -> np.ndarray:
    """The class labels of records ``indices`` [K] (e.g. ``self.indices(step, B)``): int32 [K].

    Raises:
      ValueError: the data set has no labels (class-conditional training needs them).
    """
    out = []
    for i in indices:
      record = self.source[int(i)]
      if "label" not in record:
        raise ValueError("model.num_classes > 0 needs class labels, and this data set has none (labelled: DIGITS, "
                         "CIFAR10, SVHN); set model.num_classes=0")
      out.append(int(record["label"]))
    return np.asarray(out, np.int32)

  def examples(self, indices) -> np.ndarray:
    """The records ``indices`` [K] in the model's range ([-1, 1] if centered, else [0, 1]), neither flipped
    nor dequantised: float32 [K, H, W, C]."""
    images = np.stack([self._load(i) for i in indices]).astype(np.float32) / 255.0
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
  uniform_dequantization, data_dir; FOLDER and ARRAY: path, num_channels) for ``split`` ("train" or
  "test"); for the toy ``"GMM"`` a ``data_lib.toy.MixtureData`` (fields: dim, mixture, test_size) with
  the same interface.

  Raises:
    ValueError: an unknown data set or split (the valid ones are listed); FOLDER / ARRAY data that is
      empty, too small, unreadable or of the wrong dtype or rank (one line naming data.path); a
      data.path set for another data set (which would silently ignore it).
    DatasetNotFoundError: a tensorflow-datasets set that is not prepared on disk, or a data.path that
      does not exist.
  """
  name = str(data_config.dataset).upper()
  if name not in DATASETS:
    raise ValueError(f"data.dataset must be one of {DATASETS}, got {data_config.dataset!r}")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if name not in OWN and str(data_config.get("path", "") or ""):
    raise ValueError(f"data.path={data_config.get('path')!r} is set but data.dataset={name} does not read it: use "
                     f"data.dataset=FOLDER (a folder of images) or ARRAY (an .npz of images), or leave data.path empty")
  category = str(data_config.get("category", "") or "")
  if category and name != "LSUN":
    raise ValueError(f"data.category={category!r} is set but only data.dataset=LSUN reads it (its tfds config, "
                     f"e.g. bedroom or church_outdoor); leave data.category empty for {name}")
  if name == "GMM":
    from data_lib.toy import MixtureData, get_mixture
    return MixtureData(get_mixture(data_config), seed=seed, split=int(split == "test"),
                       size=int(data_config.get("test_size", 4096)))
  if name == "DIGITS":
    x_train, y_train, x_test, y_test = load_digits_arrays()
    source = _ArraySource(x_train, y_train) if split == "train" else _ArraySource(x_test, y_test)
  elif name in OWN:
    source = own_source(data_config, split)
  else:
    _, _, _, train_split, test_split = TFDS[name]
    source = _tfds_source(name, train_split if split == "train" else test_split, data_config.get("data_dir", ""),
                          category)
  return ImageData(source, image_size=int(data_config.image_size), centered=bool(data_config.centered),
                   random_flip=bool(data_config.random_flip) and split == "train" and not evaluation,
                   dequantize=bool(data_config.get("uniform_dequantization", False)) or evaluation, seed=seed)
