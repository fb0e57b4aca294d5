"""Your own data: FOLDER (a directory of images) and ARRAY (an .npz), their errors, and tools.data_stats."""

import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from tools import data_stats as stats
from data_lib.images import DatasetNotFoundError, get_dataset, own_split_indices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_config(dataset, path, **fields):
  base = dict(dataset=dataset, path=str(path), image_size=8, num_channels=3, centered=True, random_flip=False,
              uniform_dequantization=False, data_dir="")
  return ml_collections.ConfigDict({**base, **fields})


def write_images(folder, n, size=(8, 8), mode="RGB", seed=0, nested=True):
  """n random images of ``size`` (H, W) as PNGs, every other one in a subfolder; returns their arrays."""
  rng = np.random.default_rng(seed)
  channels = {"RGB": (3,), "L": ()}[mode]
  images = []
  for i in range(n):
    image = rng.integers(0, 256, (*size, *channels), dtype=np.uint8)
    where = os.path.join(folder, "sub" if nested and i % 2 else "")
    os.makedirs(where, exist_ok=True)
    Image.fromarray(image, mode).save(os.path.join(where, f"{i:03d}.png"))
    images.append(image)
  return images


def run(args, module=None):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", module] if module else [sys.executable, os.path.join(ROOT, "main.py")]
  return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


# ------------------------------------------------------------------------------------ batches
def check_epochs(data, batch_size=4, epochs=3):
  """Consecutive blocks of len(data) positions are permutations of the split."""
  n = len(data)
  steps = math.ceil(epochs * n / batch_size)
  positions = np.concatenate([data.indices(s, batch_size) for s in range(steps)])
  for e in range(epochs):
    np.testing.assert_array_equal(np.sort(positions[e * n:(e + 1) * n]), np.arange(n))


def test_folder_batches(tmp_path):
  write_images(tmp_path, 12, size=(10, 9))                     # mixed with the resize below
  write_images(tmp_path / "more", 3, size=(8, 8), seed=1)
  (tmp_path / "notes.txt").write_text("not an image")
  data = get_dataset(data_config("FOLDER", tmp_path, random_flip=True), "train", seed=3)
  assert len(data) == 15 - 1                                    # max(1, 15 // 20) held out
  a = data.batch(5, 4)
  assert a.shape == (4, 8, 8, 3) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1
  np.testing.assert_array_equal(a, get_dataset(data_config("FOLDER", tmp_path, random_flip=True), "train",
                                               seed=3).batch(5, 4))
  assert not np.array_equal(a, get_dataset(data_config("FOLDER", tmp_path), "train", seed=4).batch(5, 4))
  check_epochs(data)


def test_array_batches_are_the_images(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (25, 8, 8, 3), dtype=np.uint8)
  np.savez(tmp_path / "x.npz", images=images, labels=np.arange(25))
  data = get_dataset(data_config("ARRAY", tmp_path / "x.npz", centered=False), "train", seed=1)
  train = own_split_indices(25, "train")
  assert len(data) == len(train) == 24
  x = data.batch(2, 5)
  assert x.shape == (5, 8, 8, 3) and 0 <= x.min() and x.max() <= 1
  np.testing.assert_allclose(x, images[train[data.indices(2, 5)]] / 255.0, atol=1e-6)
  np.testing.assert_array_equal(x, data.batch(2, 5))
  check_epochs(data, batch_size=5)


def test_array_grey_and_only_array(tmp_path):
  grey = np.random.default_rng(1).integers(0, 256, (6, 8, 8), dtype=np.uint8)
  np.savez(tmp_path / "g.npz", grey)                                # the only array (arr_0), [N, H, W]
  rgb = get_dataset(data_config("ARRAY", tmp_path / "g.npz", centered=False), "test")
  assert len(rgb) == 1
  x = rgb.batch(0, 1)[0]
  np.testing.assert_allclose(x, np.repeat(grey[own_split_indices(6, "test")[0], :, :, None] / 255.0, 3, -1),
                             atol=1e-6)


def test_resize_crop_and_channels(tmp_path):
  image = np.zeros((12, 16, 3), np.uint8)
  image[:, :] = (200, 100, 50)
  image[:, :2] = image[:, -2:] = (0, 255, 0)                        # cut by the centre crop to 12 x 12
  for i in range(2):
    Image.fromarray(image).save(tmp_path / f"{i}.png")
  grey = get_dataset(data_config("FOLDER", tmp_path, num_channels=1, centered=False), "train").batch(0, 1)
  luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50                  # pillow's "L"
  assert grey.shape == (1, 8, 8, 1) and np.abs(grey * 255 - luma).max() <= 1
  rgb = get_dataset(data_config("FOLDER", tmp_path, image_size=4, centered=False), "train").batch(0, 1)
  assert rgb.shape == (1, 4, 4, 3) and np.abs(rgb * 255 - np.array([200, 100, 50])).max() <= 1e-3
  write_images(tmp_path / "grey", 3, mode="L", nested=False)
  x = get_dataset(data_config("FOLDER", tmp_path / "grey"), "train").batch(0, 2)
  assert x.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(x[..., 0], x[..., 2])             # grey repeated to RGB


def test_image_formats(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  for name in ("a.jpg", "b.jpeg", "c.BMP", "d.webp", "e.png", "f.gif"):           # gif is not read
    Image.fromarray(image).save(tmp_path / name)
  data = get_dataset(data_config("FOLDER", tmp_path), "train")
  assert len(data) + 1 == 5 and data.batch(0, 4).shape == (4, 8, 8, 3)


# -------------------------------------------------------------------------------------- splits
def test_held_out_split_is_disjoint_and_fixed(tmp_path):
  write_images(tmp_path, 41, size=(4, 4))
  config = data_config("FOLDER", tmp_path, image_size=4)
  train, test = (get_dataset(config, s, seed=7).source.paths for s in ("train", "test"))
  assert len(test) == 2 and len(train) == 39 and not set(train) & set(test)
  assert sorted(train + test) == sorted(get_dataset(config, "train").source.paths
                                        + get_dataset(config, "test").source.paths)
  assert test == get_dataset(config, "test", seed=123).source.paths          # independent of the seed
  np.testing.assert_array_equal(own_split_indices(41, "test"), own_split_indices(41, "test"))


def test_train_test_layouts(tmp_path):
  write_images(tmp_path / "f" / "train", 3, nested=False)
  write_images(tmp_path / "f" / "test", 2, nested=False, seed=5)
  config = data_config("FOLDER", tmp_path / "f")
  assert (len(get_dataset(config, "train")), len(get_dataset(config, "test"))) == (3, 2)
  tr = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
  np.savez(tmp_path / "x.npz", train=tr, test=tr[:1])
  data = get_dataset(data_config("ARRAY", tmp_path / "x.npz", num_channels=1, centered=False), "train")
  assert len(data) == 5
  np.testing.assert_allclose(np.sort(data.batch(0, 5), axis=0), np.sort(tr / 255.0, axis=0), atol=1e-6)


# ---------------------------------------------------------------------------------- bad input
def bad_inputs(tmp_path):
  """(name, dataset, path, text the message must contain) for every bad-input case."""
  (tmp_path / "empty").mkdir()
  write_images(tmp_path / "one", 1)
  write_images(tmp_path / "corrupt", 3)
  (tmp_path / "corrupt" / "broken.png").write_bytes(b"not a png")
  np.savez(tmp_path / "float.npz", images=np.zeros((4, 8, 8, 3), np.float32))
  np.savez(tmp_path / "rank.npz", images=np.zeros((4, 8), np.uint8))
  np.savez(tmp_path / "keys.npz", a=np.zeros((4, 8, 8), np.uint8), b=np.zeros((4, 8, 8), np.uint8))
  np.savez(tmp_path / "single.npz", images=np.zeros((1, 8, 8), np.uint8))
  (tmp_path / "text.npz").write_text("not an npz")
  return [("missing", "FOLDER", tmp_path / "nowhere", "no such file"),
          ("missing_npz", "ARRAY", tmp_path / "nowhere.npz", "no such file"),
          ("unset", "FOLDER", "", "data.path is empty"),
          ("empty", "FOLDER", tmp_path / "empty", "0 image"),
          ("one", "FOLDER", tmp_path / "one", "1 image"),
          ("corrupt", "FOLDER", tmp_path / "corrupt", "broken.png"),
          ("file_as_folder", "FOLDER", tmp_path / "float.npz", "not a directory"),
          ("folder_as_array", "ARRAY", tmp_path / "empty", "ARRAY reads an .npz"),
          ("dtype", "ARRAY", tmp_path / "float.npz", "'images' has dtype float32 and shape (4, 8, 8, 3)"),
          ("rank", "ARRAY", tmp_path / "rank.npz", "'images' has dtype uint8 and shape (4, 8)"),
          ("keys", "ARRAY", tmp_path / "keys.npz", "['a', 'b']"),
          ("single", "ARRAY", tmp_path / "single.npz", "1 image"),
          ("not_npz", "ARRAY", tmp_path / "text.npz", "not a readable .npz")]


def test_bad_input_is_one_line_naming_data_path(tmp_path):
  for name, dataset, path, text in bad_inputs(tmp_path):
    with pytest.raises((ValueError, DatasetNotFoundError)) as info:
      get_dataset(data_config(dataset, path), "train")
    message = str(info.value)
    assert "data.path" in message and text in message and "\n" not in message, (name, message)
    if path:
      assert str(path) in message, (name, message)
  with pytest.raises(DatasetNotFoundError):
    get_dataset(data_config("FOLDER", tmp_path / "nowhere"), "test")
  with pytest.raises(ValueError, match=r"data.path='.*' is set but data.dataset=DIGITS does not read it"):
    get_dataset(data_config("DIGITS", tmp_path / "one"), "train")      # a forgotten --config.data.dataset=FOLDER


TINY = ["--config.model.nf=8", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
        "--config.model.attn_resolutions=()"]


def test_main_reports_bad_data_in_one_line(tmp_path):
  (tmp_path / "empty").mkdir()
  out = run(["--config=configs/vp/digits.py", f"--workdir={tmp_path / 'run'}", "--config.data.dataset=FOLDER",
             f"--config.data.path={tmp_path / 'empty'}", *TINY])
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1].startswith("error: data.path=")


# -------------------------------------------------------------------------------------- stats
def test_max_pairwise_distance_matches_brute_force():
  x = np.random.default_rng(0).normal(size=(37, 11)).astype(np.float32)
  brute = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
  distance, (i, j) = stats.max_pairwise_distance(x, block=8)
  assert distance == pytest.approx(brute.max(), rel=1e-9) and brute[i, j] == pytest.approx(distance, rel=1e-9)
  assert stats.round_up(43.21) == 44 and stats.round_up(4.0) == 4.0 and stats.round_up(0.1234) == pytest.approx(0.13)


def known_array(path):
  """Training images with a known largest distance: all 0 and all 255 (8 x 8 grey), and greys between."""
  train = np.stack([np.full((8, 8), v, np.uint8) for v in (0, 255, 60, 128, 200)])
  np.savez(path, train=train, test=train[2:3])
  return 8 * 8


@pytest.mark.parametrize("centered", [False, True])
def test_stats_distance_is_exact(tmp_path, centered):
  from configs.vp.digits import get_config
  from schema import parse_config

  dim = known_array(tmp_path / "x.npz")
  config = get_config()
  config.data.update(dataset="ARRAY", path=str(tmp_path / "x.npz"), centered=centered)
  result = stats.data_statistics(parse_config(config))
  expected = (2.0 if centered else 1.0) * math.sqrt(dim)            # 8 or 16
  assert result["max_distance"] == expected and result["pair"] == (0, 1) and not result["subsampled"]
  assert result["sigma_max"] == expected and result["sigma_min"] == (0.02 if centered else 0.01)
  assert (result["examples"], result["shape"]) == (5, (8, 8, 1))


def test_stats_on_a_tfds_set():
  import tensorflow_datasets as tfds
  from configs.ve.cifar10 import get_config
  from schema import parse_config

  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    result = stats.data_statistics(parse_config(get_config()))
  assert result["examples"] == 6 and result["shape"] == (32, 32, 3) and result["max_distance"] > 0


def test_stats_command_line(tmp_path):
  known_array(tmp_path / "x.npz")
  args = ["--config=configs/ve/digits.py", "--config.data.dataset=ARRAY"]
  out = run([*args, f"--config.data.path={tmp_path / 'x.npz'}"], module="tools.data_stats")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "max pairwise distance: 16.0000 (exact" in out.stdout
  assert "--config.model.sigma_max=16 --config.model.sigma_min=0.02" in out.stdout
  assert "need the FID Inception weights" in out.stdout and len(out.stdout.splitlines()) <= 8
  bad = run([*args, f"--config.data.path={tmp_path / 'no'}"], module="tools.data_stats")
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
  assert bad.stderr.startswith("error: data.path=")


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_main_trains_on_a_folder(tmp_path):
  write_images(tmp_path / "data", 10, size=(12, 10), mode="L")
  out = run(["--config=configs/vp/digits.py", f"--workdir={tmp_path / 'run'}", "--mode=train",
             "--config.data.dataset=FOLDER", f"--config.data.path={tmp_path / 'data'}", "--config.data.image_size=8",
             "--config.data.num_channels=1", *TINY, "--config.training.n_iters=2",
             "--config.training.batch_size=4", "--config.training.snapshot_sampling=False"])
  assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("config_module, expected", [
    ("configs.ve.bedroom", "lsun/bedroom"), ("configs.ve.church", "lsun/church_outdoor")])
def test_lsun_category_picks_the_tfds_config(monkeypatch, config_module, expected):
  """data.category selects LSUN's tensorflow-datasets config (score_sde's convention); the published
  bedroom and church configs read their own category."""
  import importlib

  import tensorflow_datasets as tfds

  asked = []
  monkeypatch.setattr(tfds, "data_source", lambda name, **kw: asked.append((name, kw["split"])) or [])
  get_dataset(importlib.import_module(config_module).get_config().data, "test")
  assert asked == [(expected, "validation")]


def test_category_outside_lsun_is_refused():
  config = ml_collections.ConfigDict(dict(dataset="CIFAR10", image_size=32, centered=False, random_flip=False,
                                          category="bedroom"))
  with pytest.raises(ValueError, match=r"^data.category='bedroom' is set but only data.dataset=LSUN reads it"):
    get_dataset(config, "train")
