"""Image data: tensorflow-datasets sources (no TensorFlow needed), the embedded digits, your own images.

A data set is a random-access source of uint8 images [H, W, C]. ``ImageData.batch(step)`` is a pure
function of (seed, step): the order is a fresh seeded permutation every epoch, so a resumed run sees
exactly the batches an uninterrupted one would, with no iterator state to checkpoint.

Your own data (``data.path``):

* ``data.dataset = "FOLDER"``: a directory of .png/.jpg/.jpeg/.bmp/.webp files, searched recursively
  (hidden files and other extensions skipped) in sorted path order, decoded lazily by index with pillow
  (a bounded cache keeps recent ones).
* ``data.dataset = "ARRAY"``: an .npz of uint8 images [N, H, W, C] (C = 1, 3 or 4) or grey [N, H, W],
  under the key ``images`` or as the file's only array (an .npy array is read memory-mapped).

Split: a folder holding both ``train/`` and ``test/`` subfolders, or an .npz holding both ``train`` and
``test`` arrays, gives the two splits. Otherwise ``max(1, N // 20)`` examples are held out as "test",
chosen by a fixed permutation (seed 0) independent of the training seed, and N >= 2 is required.
Images are converted to ``data.num_channels`` channels (1: pillow's grey "L", the ITU-R 601-2 luma;
3: "RGB"; an alpha channel is dropped), then go through the same ``ImageData`` preprocessing as the
tensorflow-datasets sets: centre crop + resize to ``data.image_size``, ``data.centered``, flips, dequantisation.

Files we did not write are read defensively; each refusal is a ValueError of one line naming the file:

* only regular files (a named pipe, device or socket is refused from ``os.stat``, never opened, so it
  cannot hang the run); data.path itself is a directory (FOLDER) or a regular file (ARRAY);
* only the decoders of ``IMAGE_FORMATS`` (PNG, JPEG, BMP, WEBP) are tried: pillow picks a decoder from
  the contents, not the name, so e.g. an EPS file named x.png (rendered by Ghostscript) is refused;
* at most ``MAX_IMAGE_PIXELS`` pixels per image, read from the header before any pixel is decoded;
* 16-bit grey PNGs are scaled to 8 bits, round(v * 255 / 65535) (16-bit colour PNGs: pillow keeps the
  high byte of each channel, v >> 8); other pixel modes (e.g. 32-bit float) are refused;
* every header is read when the source is opened (before training starts); a body that fails to
  decode later (corrupt, truncated) stops the run with the same one-line error;
* an .npz member is read into memory only when its zip entry's size matches the shape and dtype its
  array header declares, and all members read hold at most ``NPZ_MAX_BYTES`` (a larger data set: an
  .npy file, which is memory-mapped).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import stat
import zipfile

import numpy as np

# name -> (tensorflow-datasets name, image side, channels, train split, test split)
TFDS = {
    "CIFAR10": ("cifar10", 32, 3, "train", "test"),
    "SVHN": ("svhn_cropped", 32, 3, "train", "test"),
    "CELEBA": ("celeb_a", 64, 3, "train", "validation"),
    "LSUN": ("lsun/church_outdoor", 256, 3, "train", "validation"),
}
OWN = ("FOLDER", "ARRAY")       # your own data, read from data.path
DATASETS = sorted(list(TFDS) + ["DIGITS", "GMM", *OWN])
DIGITS_TEST_SIZE = 297           # a fixed split of scikit-learn's 1,797 digits: 1,500 train, 297 test
DIGITS_MAX = 16                  # digits pixels are integers 0..16
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")   # FOLDER: the files read (case-insensitive)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")   # the only pillow decoders tried, whatever a file's name says
MAX_IMAGE_PIXELS = 4096 * 4096   # per image (16.8 Mpx, 64 MiB as RGBA), checked from the header before decoding
NPZ_MAX_BYTES = 8 * 2**30        # ARRAY: an .npz's arrays are decompressed into memory, at most this much in all
OWN_TEST_DIVISOR = 20            # own data without a train/test layout: max(1, N // 20) examples are "test"
OWN_SPLIT_SEED = 0               # ... chosen by this fixed permutation, independent of the training seed
OWN_CACHE_BYTES = 256 * 2**20    # FOLDER: decoded images kept per split (least recently used dropped first)
_PIL_MODE = {1: "L", 3: "RGB"}   # data.num_channels -> the pillow mode images are converted to
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")     # grey 0..65535, scaled by 255 / 65535
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


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


# ------------------------------------------------------------------------------- your own data
class _Subset:
  """The records ``indices`` [K] of a random-access source, in that order."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[int(i)])]


class _ChannelSource:
  """uint8 images [N, H, W, C] (or [N, H, W]) as records {"image": uint8 [H, W, num_channels]}."""

  def __init__(self, images: np.ndarray, num_channels: int):
    self.images, self.num_channels = images, num_channels

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": convert_channels(np.asarray(self.images[int(i)]), self.num_channels)}


class _FileSource:
  """Image files decoded on access to records {"image": uint8 [H, W, num_channels]}.

  Only the images asked for are decoded; the most recently used ones are kept up to ``cache_bytes``.
  A file that fails to decode raises ValueError naming ``data.path`` and the file.
  """

  def __init__(self, paths: list[str], num_channels: int, where: str, cache_bytes: int = OWN_CACHE_BYTES):
    self.paths, self.num_channels, self.where, self.cache_bytes = paths, num_channels, where, cache_bytes
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._cached_bytes = 0

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    path = self.paths[int(i)]
    image = self._cache.get(path)
    if image is not None:
      self._cache.move_to_end(path)
    else:
      image = read_image(path, self.num_channels, self.where)
      self._remember(path, image)
    return {"image": image}

  def _remember(self, path: str, image: np.ndarray) -> None:
    if image.nbytes > self.cache_bytes:
      return
    self._cache[path] = image
    self._cached_bytes += image.nbytes
    while self._cached_bytes > self.cache_bytes:
      self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes


def convert_channels(image: np.ndarray, num_channels: int) -> np.ndarray:
  """uint8 [H, W] or [H, W, C] (C = 1, 3 or 4) as uint8 [H, W, num_channels]: pillow's conversion to
  "L" (1 channel; luma L = 0.299 R + 0.587 G + 0.114 B) or "RGB" (3; grey repeated, alpha dropped)."""
  from PIL import Image

  if image.ndim == 3 and image.shape[-1] == num_channels:
    return image
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  source_mode = "L" if image.ndim == 2 else {3: "RGB", 4: "RGBA"}[image.shape[-1]]
  out = np.asarray(Image.fromarray(image, source_mode).convert(_PIL_MODE[num_channels]))
  return out.reshape(out.shape[0], out.shape[1], num_channels)


def _kind(mode: int) -> str:
  return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


@contextlib.contextmanager
def _regular_file(path: str, where: str):
  """``path`` opened for binary reading if it is a regular file (symbolic links followed).

  A named pipe, device or socket is refused from ``os.stat`` without opening it (opening a pipe blocks
  until a writer appears); the descriptor is opened non-blocking and checked again, so a file swapped
  in between cannot hang the run either.

  Raises:
    ValueError: "{where}: FILE is a named pipe (FIFO), not a regular file" (or a device, ...), or the
      OSError of a file that cannot be opened, in one line naming it.
  """
  flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
  try:
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
      raise ValueError(f"{where}: {path!r} is {_kind(mode)}, not a regular file; only regular files are read")
    f = os.fdopen(os.open(path, flags), "rb")
  except OSError as e:
    raise ValueError(f"{where}: cannot open {path!r} ({type(e).__name__}: {e.strerror or _first_line(e)})") from None
  with f:
    mode = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(mode):                       # replaced after the stat above
      raise ValueError(f"{where}: {path!r} is {_kind(mode)}, not a regular file; only regular files are read")
    yield f


@contextlib.contextmanager
def _open_image(path: str, where: str):
  """The pillow image of file ``path`` with only its header read (no pixel decoded), after every check
  that needs no decoding: a regular file, one of ``IMAGE_FORMATS`` (from the contents), at most
  ``MAX_IMAGE_PIXELS`` pixels, a pixel mode that is read. Raises ValueError in one line naming the file."""
  from PIL import Image

  formats = ", ".join(IMAGE_FORMATS)
  with _regular_file(path, where) as f:
    try:
      im = Image.open(f, formats=list(IMAGE_FORMATS))
    except Image.UnidentifiedImageError:
      raise ValueError(f"{where}: {path!r} is not a {formats} image (the formats read; the contents decide, "
                       f"not the file name)") from None
    except Image.DecompressionBombError as e:        # pillow's own limit, far above ours
      raise ValueError(f"{where}: image {path!r} has more than MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} pixels "
                       f"({_first_line(e)})") from None
    except Exception as e:  # pillow raises several types for a corrupt header
      raise ValueError(f"{where}: cannot read image {path!r} ({type(e).__name__}: {_first_line(e)})") from None
    with im:
      width, height = im.size
      if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{where}: image {path!r} is {width}x{height} = {width * height} pixels, more than "
                         f"MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} (4096x4096); shrink it first")
      if im.mode not in _EIGHT_BIT_MODES + _SIXTEEN_BIT_MODES:
        raise ValueError(f"{where}: image {path!r} has pixel mode {im.mode!r}, which is not read (8-bit images "
                         f"and 16-bit grey are)")
      yield im


def _to_uint8(im, num_channels: int, path: str, where: str) -> np.ndarray:
  """A decoded pillow image as uint8 [H, W, num_channels]; 16-bit grey v -> round(v * 255 / 65535)."""
  from PIL import Image

  if im.mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(im)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise ValueError(f"{where}: image {path!r} (mode {im.mode!r}) has values in {values.min()}..{values.max()}, "
                       f"outside the 16-bit range 0..65535")
    # round(v * 255 / 65535) = round(v / 257), never a tie for integer v: (v + 128) // 257
    im = Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8))
  image = np.asarray(im.convert(_PIL_MODE[num_channels]))
  return image.reshape(image.shape[0], image.shape[1], num_channels)


def read_image(path: str, num_channels: int, where: str = "data.path") -> np.ndarray:
  """The image file at ``path`` as uint8 [H, W, num_channels] (EXIF orientation applied; 1 channel: "L",
  3: "RGB"; 16-bit grey scaled by 255 / 65535 and rounded).

  Raises:
    ValueError: one line naming the file: not a regular file, not one of ``IMAGE_FORMATS``, more than
      ``MAX_IMAGE_PIXELS`` pixels, a pixel mode not read, or a corrupt or truncated file
      ("{where}: cannot read image FILE (...)").
  """
  from PIL import ImageOps

  with _open_image(path, where) as im:                # the checks above, from the header alone
    try:
      im.load()
      im = ImageOps.exif_transpose(im)
    except Exception as e:  # pillow raises several types for corrupt or truncated files
      raise ValueError(f"{where}: cannot read image {path!r} ({type(e).__name__}: {_first_line(e)})") from None
    return _to_uint8(im, num_channels, path, where)


def _first_line(e: Exception) -> str:
  return (str(e).splitlines() or [""])[0][:160]


def own_split_indices(n: int, split: str) -> np.ndarray:
  """Sorted indices [K] of ``split`` ("train" or "test") among n examples without a train/test layout:
  the first max(1, n // 20) of a fixed permutation (seed 0, whatever the training seed) are "test"."""
  order = np.random.default_rng(OWN_SPLIT_SEED).permutation(n)
  n_test = max(1, n // OWN_TEST_DIVISOR)
  return np.sort(order[:n_test] if split == "test" else order[n_test:])


def image_files(folder: str) -> list[str]:
  """The image files under ``folder`` (recursive, symbolic links followed once; hidden entries and
  other extensions skipped) as sorted paths."""
  found, seen = [], set()
  for root, dirs, files in os.walk(folder, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:                            # a symbolic-link cycle
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    found += [os.path.join(root, f) for f in files
              if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


def _check_files(paths: list[str], where: str) -> None:
  """Reads every file's header (no decoding): a file ``read_image`` would refuse from its header alone
  (not a regular file, not an allowed format, too many pixels, ...) raises ValueError naming it."""
  for path in paths:
    with _open_image(path, where):
      pass


def _folder_source(path: str, split: str, num_channels: int, where: str):
  """FOLDER: ``train/`` and ``test/`` subfolders if both exist, else every image with a held-out split."""
  layout = all(os.path.isdir(os.path.join(path, s)) for s in ("train", "test"))
  if layout:
    files = {s: image_files(os.path.join(path, s)) for s in ("train", "test")}
    for s, found in files.items():
      if not found:
        raise ValueError(f"{where}: the {s}/ subfolder holds no images ({', '.join(IMAGE_EXTENSIONS)}); with "
                         f"train/ and test/ subfolders both must hold images")
    _check_files(files["train"] + files["test"], where)
    return _FileSource(files[split], num_channels, where)
  found = image_files(path)
  if len(found) < 2:
    raise ValueError(f"{where}: the folder holds {len(found)} image(s) ({', '.join(IMAGE_EXTENSIONS)}, searched "
                     f"recursively); at least 2 are needed (one is held out as the test split)")
  _check_files(found, where)
  return _FileSource([found[i] for i in own_split_indices(len(found), split)], num_channels, where)


def _check_array(dtype: np.dtype, shape: tuple, key: str, where: str) -> None:
  """uint8 [N, H, W, C] (C = 1, 3, 4) or [N, H, W]; anything else raises ValueError naming the key and shape."""
  ok = dtype == np.uint8 and (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4)))
  if not ok or min(shape[1:3], default=0) < 1:
    raise ValueError(f"{where}: array {key!r} has dtype {dtype} and shape {tuple(shape)}; expected "
                     f"uint8 images [N, H, W, C] with C in (1, 3, 4), or grey [N, H, W]")


def _check_npz_members(path: str, keys: list[str], where: str) -> None:
  """Before the .npz arrays ``keys`` are decompressed into memory: each zip entry's size (from the central
  directory, which bounds what is decompressed) must equal its .npy header plus the bytes of the shape and
  dtype it declares, that array must be images (``_check_array``), and all of them together at most
  ``NPZ_MAX_BYTES``. Raises ValueError naming the key otherwise."""
  from numpy.lib import format as npy

  readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
  total = 0
  try:
    archive = zipfile.ZipFile(path)
  except Exception as e:  # zipfile raises several types for a damaged archive
    raise ValueError(f"{where}: cannot read the .npz ({type(e).__name__}: {_first_line(e)})") from None
  with archive:
    names = set(archive.namelist())
    for key in keys:
      info = archive.getinfo(f"{key}.npy" if f"{key}.npy" in names else key)
      try:
        with archive.open(info) as member:
          version = npy.read_magic(member)
          if version not in readers:
            raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
          shape, _, dtype = readers[version](member)
          header = member.tell()
      except Exception as e:  # numpy and zipfile raise several types for a damaged member
        raise ValueError(f"{where}: array {key!r} has no readable .npy header ({type(e).__name__}: "
                         f"{_first_line(e)})") from None
      _check_array(dtype, shape, key, where)
      declared = math.prod(shape) * dtype.itemsize
      if info.file_size - header != declared:
        raise ValueError(f"{where}: array {key!r} declares shape {tuple(shape)} ({declared} bytes) but its zip "
                         f"entry holds {info.file_size - header} bytes")
      total += info.file_size
  if total > NPZ_MAX_BYTES:
    raise ValueError(f"{where}: the .npz arrays {keys} hold {total} bytes, more than NPZ_MAX_BYTES={NPZ_MAX_BYTES} "
                     f"that are read into memory; save them as one .npy file (read memory-mapped) instead")


def _array_source(path: str, split: str, num_channels: int, where: str):
  """ARRAY: an .npz with ``train`` and ``test`` arrays, or one images array (key ``images`` or the only
  one; an .npy file is that array) with a held-out split."""
  try:
    loaded = np.load(path, mmap_mode="r", allow_pickle=False)
  except Exception as e:
    raise ValueError(f"{where}: not a readable .npz of uint8 images ({type(e).__name__}: {_first_line(e)})") from None
  if isinstance(loaded, np.ndarray):
    arrays, keys = {"(the .npy array)": loaded}, ["(the .npy array)"]
  else:
    with loaded:
      keys = list(loaded.files)
      if "train" in keys and "test" in keys:
        keys = ["train", "test"]
      elif "images" in keys:
        keys = ["images"]
      elif len(keys) != 1:
        raise ValueError(f"{where}: the .npz holds arrays {keys}; expected one array, or the key 'images', or "
                         f"the keys 'train' and 'test'")
      _check_npz_members(path, keys, where)            # before anything is decompressed
      try:
        arrays = {k: loaded[k] for k in keys}
      except Exception as e:
        raise ValueError(f"{where}: cannot read the .npz ({type(e).__name__}: {_first_line(e)})") from None
  for key, images in arrays.items():
    _check_array(images.dtype, images.shape, key, where)
  if keys == ["train", "test"]:
    for key, images in arrays.items():
      if len(images) < 1:
        raise ValueError(f"{where}: array {key!r} is empty (shape {tuple(images.shape)})")
    return _ChannelSource(arrays[split], num_channels)
  (key, images), = arrays.items()
  if len(images) < 2:
    raise ValueError(f"{where}: array {key!r} holds {len(images)} image(s) (shape {tuple(images.shape)}); at least "
                     f"2 are needed (one is held out as the test split)")
  return _Subset(_ChannelSource(images, num_channels), own_split_indices(len(images), split))


def own_source(data_config, split: str):
  """The random-access source of ``split`` of data.path for data.dataset FOLDER or ARRAY (module docstring).

  Raises:
    DatasetNotFoundError: data.path does not exist.
    ValueError: data.path is empty or of the wrong kind (FOLDER: a directory; ARRAY: a regular file), no
      or too few images, an image refused from its header (named: not a regular file, not one of
      IMAGE_FORMATS, more than MAX_IMAGE_PIXELS, ...), an array of the wrong dtype or rank, or an .npz
      member whose size does not match its header or above NPZ_MAX_BYTES (key named).
  """
  name = str(data_config.dataset).upper()
  path = os.path.expanduser(str(data_config.get("path", "") or ""))
  what = "a folder of images" if name == "FOLDER" else "an .npz of uint8 images"
  if not path:
    raise ValueError(f"data.path is empty: data.dataset={name} reads {what}, e.g. --config.data.path=/data/mine")
  num_channels = int(data_config.get("num_channels", 3))
  if num_channels not in _PIL_MODE:
    raise ValueError(f"data.num_channels must be one of {sorted(_PIL_MODE)} for data.dataset={name}, "
                     f"got {num_channels!r}")
  where = f"data.path={path!r} (data.dataset={name})"
  if not os.path.exists(path):
    raise DatasetNotFoundError(f"{where}: no such file or directory; set --config.data.path to {what}")
  if name == "FOLDER":
    if not os.path.isdir(path):
      raise ValueError(f"{where}: not a directory; FOLDER reads a folder of images (ARRAY reads an .npz file)")
    return _folder_source(path, split, num_channels, where)
  if os.path.isdir(path):
    raise ValueError(f"{where}: a directory; ARRAY reads an .npz file (FOLDER reads a folder of images)")
  with _regular_file(path, where):                        # a named pipe would block np.load forever
    pass
  return _array_source(path, split, num_channels, where)


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
  "test"); for the toy ``"GMM"`` a ``datasets.toy.MixtureData`` (fields: dim, mixture, test_size) with
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
    from datasets.toy import MixtureData, get_mixture
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
