"""Your own data (``data.path``): the FOLDER and ARRAY sources and the checks made when they are opened.

* ``data.dataset = "FOLDER"``: a directory of .png/.jpg/.jpeg/.bmp/.webp files, searched recursively
  (hidden files and other extensions skipped) in sorted path order, decoded lazily by index with pillow
  (a bounded cache keeps recent ones).
* ``data.dataset = "ARRAY"``: an .npz of uint8 images [N, H, W, C] (C = 1, 3 or 4) or grey [N, H, W],
  under the key ``images`` or as the file's only array (an .npy array is read memory-mapped).

Split: a folder holding both ``train/`` and ``test/`` subfolders, or an .npz holding both ``train`` and
``test`` arrays, gives the two splits. Otherwise ``max(1, N // 20)`` examples are held out as "test",
chosen by a fixed permutation (seed 0) independent of the training seed, and N >= 2 is required.
Images are converted to ``data.num_channels`` channels (1: pillow's grey "L", the ITU-R 601-2 luma;
3: "RGB"; an alpha channel is dropped), then go through the same ``ImageData`` preprocessing
(``data_lib.images``) as the tensorflow-datasets sets.

Files we did not write are read defensively (``data_lib.untrusted_images``: regular files only, the
decoders of IMAGE_FORMATS only, at most MAX_IMAGE_PIXELS, 16-bit grey scaled); each refusal is a
ValueError of one line naming the file. In addition:

* data.path itself is a directory (FOLDER) or a regular file (ARRAY);
* every header is read when the source is opened (before training starts); a body that fails to
  decode later (corrupt, truncated) stops the run with the same one-line error;
* an .npz member is read into memory only when its zip entry's size matches the shape and dtype its
  array header declares, and all members read hold at most ``NPZ_MAX_BYTES`` (a larger data set: an
  .npy file, which is memory-mapped).
"""

from __future__ import annotations

import collections
import math
import os
import zipfile

import numpy as np

from data_lib.errors import DatasetNotFoundError
from data_lib.untrusted_images import (  # noqa: F401  (MAX_IMAGE_PIXELS: the cap own_source documents)
    MAX_IMAGE_PIXELS, _PIL_MODE, _first_line, _open_image, _regular_file, convert_channels, read_image)

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")   # FOLDER: the files read (case-insensitive)
NPZ_MAX_BYTES = 8 * 2**30        # ARRAY: an .npz's arrays are decompressed into memory, at most this much in all
OWN_TEST_DIVISOR = 20            # own data without a train/test layout: max(1, N // 20) examples are "test"
OWN_SPLIT_SEED = 0               # ... chosen by this fixed permutation, independent of the training seed
OWN_CACHE_BYTES = 256 * 2**20    # FOLDER: decoded images kept per split (least recently used dropped first)


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
