"""Image folders and arrays we did not write (issue 22, item 3): the decoders tried, regular files only,
16-bit PNGs, a pixel cap read from the header, bad data found before the model is built, a corrupt body
stopping the run in one line, and .npz members that would inflate blindly."""

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFile

from data_lib import own_data as images_lib  # MAX_IMAGE_PIXELS, NPZ_MAX_BYTES (read by the FOLDER / ARRAY sources)
from data_lib.images import DatasetNotFoundError, get_dataset, read_image
from tests.test_own_data import TINY, data_config, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


@contextlib.contextmanager
def deadline(seconds=5.0):
  """Fails the test, instead of hanging it, when the body blocks (e.g. opening a named pipe)."""
  def expired(*_):
    raise TimeoutError(f"still blocked after {seconds} s")

  previous = signal.signal(signal.SIGALRM, expired)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def refused(dataset, path, *texts, **fields):
  """The one-line error of get_dataset on ``path``; it must contain every text."""
  with deadline(), pytest.raises((ValueError, DatasetNotFoundError)) as info:
    get_dataset(data_config(dataset, path, **fields), "train")
  message = str(info.value)
  assert "\n" not in message and message.startswith("data.path="), message
  for text in texts:
    assert text in message, (text, message)
  return message


def run_main(args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  start = time.perf_counter()
  out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], env=env, capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
  return out, time.perf_counter() - start


def error_line(out):
  """The process's one ``error:`` line, which is its last line on stderr."""
  lines = out.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error:")]
  assert out.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0], out.stderr[-3000:]
  return errors[0]


# ------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("kind", ["eps", "tiff", "gif"])
def test_contents_not_the_name_pick_the_decoder(tmp_path, kind):
  write_images(tmp_path, 3)
  bad = tmp_path / "x.png"
  if kind == "eps":
    bad.write_bytes(EPS)                                      # pillow would hand this to Ghostscript
  else:
    Image.new("RGB", (8, 8), (10, 20, 30)).save(bad, format=kind.upper())
  refused("FOLDER", tmp_path, str(bad), "not a PNG, JPEG, BMP, WEBP image")
  with pytest.raises(ValueError, match="not a PNG, JPEG, BMP, WEBP image"):
    read_image(str(bad), 3)


def test_an_allowed_format_under_another_extension_is_read(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  Image.fromarray(image).save(tmp_path / "really_a_bmp.png", format="BMP")
  np.testing.assert_array_equal(read_image(str(tmp_path / "really_a_bmp.png"), 3), image)


# ------------------------------------------------------------------------------- regular files
def test_a_named_pipe_in_the_folder_is_refused_without_opening_it(tmp_path):
  write_images(tmp_path, 3)
  os.mkfifo(tmp_path / "sub" / "pipe.png")
  refused("FOLDER", tmp_path, str(tmp_path / "sub" / "pipe.png"), "named pipe (FIFO), not a regular file")
  with deadline(), pytest.raises(ValueError, match="named pipe"):
    read_image(str(tmp_path / "sub" / "pipe.png"), 3)


def test_a_device_in_the_folder_is_refused(tmp_path):
  write_images(tmp_path, 3)
  os.symlink("/dev/zero", tmp_path / "zero.png")
  refused("FOLDER", tmp_path, str(tmp_path / "zero.png"), "character device, not a regular file")


def test_data_path_of_the_wrong_kind(tmp_path):
  os.mkfifo(tmp_path / "pipe.npz")
  refused("ARRAY", tmp_path / "pipe.npz", str(tmp_path / "pipe.npz"), "named pipe (FIFO), not a regular file")
  refused("FOLDER", tmp_path / "pipe.npz", "not a directory")
  refused("ARRAY", "/dev/zero", "'/dev/zero' is a character device")


# ---------------------------------------------------------------------------------- 16-bit PNG
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
  values = np.array([[0, 1, 128, 129, 257, 385, 386, 1000],
                     [32767, 32768, 40000, 65279, 65407, 65408, 65534, 65535]], np.uint16)
  Image.fromarray(values).save(tmp_path / "a.png")
  with Image.open(tmp_path / "a.png") as im:
    assert im.mode == "I;16"                                  # a real 16-bit PNG, as pillow writes it
  expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
  np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), 1)[..., 0], expected)
  np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), 3), np.repeat(expected[..., None], 3, -1))
  square = np.resize(values, (8, 8))                          # through the data pipeline: 8 x 8, not resized
  (tmp_path / "folder").mkdir()
  for name in ("b.png", "c.png"):
    Image.fromarray(square).save(tmp_path / "folder" / name)
  data = get_dataset(data_config("FOLDER", tmp_path / "folder", num_channels=1, centered=False), "train")
  np.testing.assert_array_equal(np.round(data.examples([0])[0, ..., 0] * 255), np.resize(expected, (8, 8)))


# ----------------------------------------------------------------------------------- pixel cap
def test_pixel_cap_is_read_from_the_header(tmp_path, monkeypatch):
  assert images_lib.MAX_IMAGE_PIXELS == 4096 * 4096
  pixels, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
  write_images(tmp_path / "ok", 2)
  Image.new("1", (4096, 4096)).save(tmp_path / "ok" / "edge.png")           # exactly the cap
  write_images(tmp_path / "over", 2)
  Image.new("1", (4097, 4096)).save(tmp_path / "over" / "over.png")
  write_images(tmp_path / "bomb", 2)
  Image.new("1", (20000, 20000)).save(tmp_path / "bomb" / "bomb.png")      # 400 Mpx in ~50 KB
  assert os.path.getsize(tmp_path / "bomb" / "bomb.png") < 100_000

  def no_decoding(self, *args, **kwargs):
    raise AssertionError("an image was decoded")

  monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
  assert len(get_dataset(data_config("FOLDER", tmp_path / "ok"), "train")) == 2   # headers only
  start = time.perf_counter()
  refused("FOLDER", tmp_path / "over", "over.png", "4097x4096 = 16781312 pixels, more than MAX_IMAGE_PIXELS")
  refused("FOLDER", tmp_path / "bomb", "bomb.png", "more than MAX_IMAGE_PIXELS")
  with pytest.raises(ValueError, match="more than MAX_IMAGE_PIXELS"):
    read_image(str(tmp_path / "bomb" / "bomb.png"), 3)
  assert time.perf_counter() - start < 5
  assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (pixels, truncated)   # nothing global


# ------------------------------------------------------------------------------- corrupt bodies
def corrupt_png(path, how, seed=0):
  """A PNG whose header (signature, IHDR) is valid and whose pixel data is truncated or garbled."""
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buffer, "PNG")
  data = bytearray(buffer.getvalue())
  idat = data.index(b"IDAT") + 4
  if how == "truncated":
    data = data[:idat + 20]
  else:
    data[idat + 2:idat + 40] = bytes(38)
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_a_corrupt_body_passes_the_header_check_and_fails_naming_the_file(tmp_path, how):
  write_images(tmp_path, 3, mode="L")
  corrupt_png(tmp_path / "bad.png", how)
  config = data_config("FOLDER", tmp_path, num_channels=1)
  data = [get_dataset(config, split) for split in ("train", "test")]     # the header is fine
  with pytest.raises(ValueError) as info:
    for split in data:
      split.examples(range(len(split)))
  message = str(info.value)
  assert "\n" not in message and f"cannot read image {str(tmp_path / 'bad.png')!r}" in message, message


def tiny_folder_config(path, seed):
  config = importlib.import_module("configs.vp.digits").get_config()
  config.model.update(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=())
  config.data.update(dataset="FOLDER", path=str(path), image_size=8, num_channels=1)
  config.training.update(batch_size=2, steps_per_call=1, eval_freq=1000, snapshot_freq=1, log_freq=1,
                         snapshot_freq_for_preemption=1, snapshot_sampling=False, n_iters=20)
  config.seed = seed
  return config


@pytest.mark.slow
def test_corrupt_image_mid_training_stops_in_one_line_and_keeps_checkpoints(tmp_path):
  from training.checkpoint import Checkpointer
  from training.train import setup

  write_images(tmp_path / "data" / "train", 7, mode="L", nested=False)
  write_images(tmp_path / "data" / "test", 2, mode="L", nested=False, seed=1)
  bad = tmp_path / "data" / "train" / "bad.png"
  corrupt_png(bad, "truncated")
  # A seed whose first batch misses the corrupt image: steps before it train and are checkpointed.
  for seed in range(100):
    data = get_dataset(tiny_folder_config(tmp_path / "data", seed).data, "train", seed=seed)
    index = data.source.paths.index(str(bad))
    first = next(step for step in range(20) if index in data.indices(step, 2))
    if first >= 1:
      break
  workdir = tmp_path / "run"
  out, _ = run_main(["--config=configs/vp/digits.py", f"--workdir={workdir}", "--mode=train",
                     "--config.data.dataset=FOLDER", f"--config.data.path={tmp_path / 'data'}",
                     "--config.data.image_size=8", "--config.data.num_channels=1", *TINY, f"--config.seed={seed}",
                     "--config.training.n_iters=20", "--config.training.batch_size=2",
                     "--config.training.steps_per_call=1", "--config.training.eval_freq=1000",
                     "--config.training.snapshot_freq=1", "--config.training.snapshot_freq_for_preemption=1",
                     "--config.training.snapshot_sampling=False"])
  assert f"cannot read image {str(bad)!r}" in error_line(out)
  # Every checkpoint written before the failure is complete: the newest loads, at the step reached.
  run = setup(tiny_folder_config(tmp_path / "data", seed))
  checkpointer = Checkpointer(str(workdir))
  try:
    assert checkpointer.snapshot_steps() == list(range(1, first + 1))
    assert int(checkpointer.restore_latest(run.state_template()).step) == first
  finally:
    checkpointer.close()


# ------------------------------------------------------------------------ before the model is built
def test_bad_data_path_fails_before_the_model_is_built(tmp_path):
  workdir = tmp_path / "run"
  out, seconds = run_main(["--config=configs/vp/digits.py", f"--workdir={workdir}", "--mode=train",
                           "--config.data.dataset=FOLDER", "--config.data.path=/nonexistent"])
  assert error_line(out).startswith("error: data.path='/nonexistent' (data.dataset=FOLDER): no such file")
  assert not workdir.exists()                                   # no empty checkpoints/ skeleton
  assert seconds < 60, seconds


def test_eval_opens_its_data_before_the_model(tmp_path, monkeypatch):
  from training import evaluate

  def no_setup(config):
    raise AssertionError("the model was built before the data was opened")

  monkeypatch.setattr(evaluate, "setup", no_setup)
  config = tiny_folder_config(tmp_path / "nowhere", 0)
  with pytest.raises(DatasetNotFoundError, match="no such file"):
    evaluate.evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ ARRAY .npz
def npy_bytes(array, shape=None):
  """``array`` in .npy format, its header declaring ``shape`` (default: the real one)."""
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, array)
  data = buffer.getvalue()
  if shape is None:
    return data
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
  return header.getvalue() + array.tobytes()


def test_npz_members_are_checked_before_they_are_inflated(tmp_path, monkeypatch):
  images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
  np.savez_compressed(tmp_path / "good.npz", images=images)
  assert len(get_dataset(data_config("ARRAY", tmp_path / "good.npz"), "train")) == 9
  with zipfile.ZipFile(tmp_path / "lies.npz", "w", zipfile.ZIP_DEFLATED) as z:     # claims 10^6 images
    z.writestr("images.npy", npy_bytes(images, shape=(10**6, 8, 8, 3)))
  refused("ARRAY", tmp_path / "lies.npz", "'images' declares shape (1000000, 8, 8, 3) (192000000 bytes) but its "
          "zip entry holds 1920 bytes")
  with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:                           # not an .npy member
    z.writestr("images", b"\x00" * 100)
  refused("ARRAY", tmp_path / "raw.npz", "'images' has no readable .npy header")
  monkeypatch.setattr(images_lib, "NPZ_MAX_BYTES", 1000)
  refused("ARRAY", tmp_path / "good.npz", "more than NPZ_MAX_BYTES=1000", "as one .npy file")
