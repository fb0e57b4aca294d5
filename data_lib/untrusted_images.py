"""Image files we did not write, read defensively: ``read_image`` and the checks it makes from the header
before any pixel is decoded. Each refusal is a ValueError of one line naming the file:

* only regular files (a named pipe, device or socket is refused from ``os.stat``, never opened, so it
  cannot hang the run);
* only the decoders of ``IMAGE_FORMATS`` (PNG, JPEG, BMP, WEBP) are tried: pillow picks a decoder from
  the contents, not the name, so e.g. an EPS file named x.png (rendered by Ghostscript) is refused;
* at most ``MAX_IMAGE_PIXELS`` pixels per image, read from the header before any pixel is decoded;
* 16-bit grey PNGs are scaled to 8 bits, round(v * 255 / 65535) (16-bit colour PNGs: pillow keeps the
  high byte of each channel, v >> 8); other pixel modes (e.g. 32-bit float) are refused;
* a body that fails to decode (corrupt, truncated) raises the same one-line error.

Images are converted to 1 channel (pillow's grey "L", the ITU-R 601-2 luma) or 3 ("RGB"; an alpha
channel is dropped) by ``convert_channels`` / ``read_image``.
"""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")   # the only pillow decoders tried, whatever a file's name says
MAX_IMAGE_PIXELS = 4096 * 4096   # per image (16.8 Mpx, 64 MiB as RGBA), checked from the header before decoding
_PIL_MODE = {1: "L", 3: "RGB"}   # data.num_channels -> the pillow mode images are converted to
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")     # grey 0..65535, scaled by 255 / 65535
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


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
