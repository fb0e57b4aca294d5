"""The FID Inception-v3: architecture size, weight loading and layout, features, the Inception score.

Real weights cannot be downloaded here, so everything runs on random weights written in pytorch-fid's
state-dict layout; the layout itself is checked against a direct numpy evaluation of torch's formulas.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evaluation import inception as inc


@pytest.fixture(scope="module")
def random_variables():
  # Random running statistics too, so batch norm is not the identity.
  variables = inc.InceptionV3(resize_to=75).init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  variables = jax.tree.map(np.asarray, variables)
  rng = np.random.default_rng(0)
  draw = lambda path, v: (rng.normal(0, 0.1, v.shape) if path[-1].key == "mean" else rng.uniform(0.5, 1.5, v.shape))
  stats = jax.tree_util.tree_map_with_path(lambda p, v: draw(p, v).astype(np.float32), variables["batch_stats"])
  return {"params": variables["params"], "batch_stats": stats}


def test_parameter_count_is_torchvisions_inception_without_aux_with_1008_classes():
  # torchvision's inception_v3 has 27,161,264 parameters; its aux classifier 3,326,696
  # (1x1 conv 768->128 + BN, 5x5 conv 128->768 + BN, fc 768->1000); 1008 classes add 8 * 2049.
  assert inc.count_parameters() == 27_161_264 - 3_326_696 + 8 * 2049 == 23_850_960


@pytest.mark.slow
def test_state_dict_round_trip_through_an_npz_file(tmp_path, random_variables):
  state_dict = inc.state_dict_from_variables(random_variables)
  assert state_dict["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)            # torch OIHW
  assert state_dict["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert state_dict["fc.weight"].shape == (1008, 2048)
  state_dict["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)                 # present in real files
  path = str(tmp_path / "inception.npz")
  np.savez(path, **state_dict)
  loaded = inc.load_variables(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, random_variables)


def test_convert_command_writes_a_loadable_archive(tmp_path, random_variables):
  import os, subprocess, sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  np.savez(tmp_path / "in.npz", **inc.state_dict_from_variables(random_variables))
  out = str(tmp_path / "out.npz")
  result = subprocess.run([sys.executable, "-m", "tools.convert_inception", str(tmp_path / "in.npz"), out],
                          cwd=root, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0 and "eval.inception_path=" in result.stdout, result.stderr
  jax.tree.map(np.testing.assert_array_equal, inc.load_variables(out), random_variables)


@pytest.mark.slow
def test_a_pth_state_dict_loads_without_torch(tmp_path, random_variables):
  """pytorch-fid's weights as torch.save writes a state dict (an OrderedDict of tensors, one storage each,
  num_batches_tracked as int64), written by the tests' torch-free writer: read by our safe reader and
  equal to the variables; tools.convert_inception turns it into an .npz without torch."""
  import os, subprocess, sys
  from tests import hostile
  state_dict = inc.state_dict_from_variables(random_variables)
  items, storages = [], {}
  for i, (name, value) in enumerate(state_dict.items()):
    kind = "LongStorage" if value.dtype == np.int64 else "FloatStorage"
    storages[str(i)] = (kind, np.ascontiguousarray(value))
    items.append((name, hostile.Tensor.dense(str(i), value.shape, storage=kind)))
  items.append(("Conv2d_1a_3x3.bn.num_batches_tracked", hostile.Tensor.dense("n", (), storage="LongStorage")))
  storages["n"] = ("LongStorage", np.array([7], np.int64))
  path = hostile.write_pth(tmp_path / "pt_inception.pth", hostile.ODict(items), storages)
  read = inc.read_state_dict(path)
  assert int(read.pop("Conv2d_1a_3x3.bn.num_batches_tracked")) == 7
  assert sorted(read) == sorted(state_dict)
  jax.tree.map(np.testing.assert_array_equal, inc.variables_from_state_dict(read), random_variables)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-m", "tools.convert_inception", path, str(tmp_path / "w.npz")],
                          cwd=root, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr
  bad = hostile.write(tmp_path / "bad.pth", b"PK\x03\x04 not really a zip")
  result = subprocess.run([sys.executable, "-m", "tools.convert_inception", bad, str(tmp_path / "x.npz")],
                          cwd=root, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
  assert not os.path.exists(tmp_path / "x.npz")


def test_bad_weight_files_are_named(tmp_path, random_variables):
  with pytest.raises(FileNotFoundError, match="eval.inception_path.*pt_inception-2015-12-05"):
    inc.load_variables(str(tmp_path / "absent.npz"))
  state_dict = inc.state_dict_from_variables(random_variables)
  del state_dict["Mixed_7c.branch_pool.bn.running_var"]
  np.savez(tmp_path / "short.npz", **state_dict)
  with pytest.raises(ValueError, match="Mixed_7c"):
    inc.load_variables(str(tmp_path / "short.npz"))
  state_dict = inc.state_dict_from_variables(random_variables)
  state_dict["fc.weight"] = state_dict["fc.weight"][:1000]
  np.savez(tmp_path / "wrong.npz", **state_dict)
  with pytest.raises(ValueError, match="fc"):
    inc.load_variables(str(tmp_path / "wrong.npz"))


def test_torch_layout_is_read_correctly(random_variables):
  """The first BasicConv2d and the fc layer, evaluated with torch's formulas on the torch-layout
  arrays in numpy, equal the Flax layers on the converted variables."""
  sd = inc.state_dict_from_variables(random_variables)
  variables = inc.variables_from_state_dict(sd)
  x = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype(np.float32)
  # torch: y[o] = sum_{i,kh,kw} W[o, i, kh, kw] x[i, 2h + kh, 2w + kw] (stride 2, no padding); BN; ReLU.
  w = sd["Conv2d_1a_3x3.conv.weight"]
  patches = np.stack([[x[:, 2 * h:2 * h + 3, 2 * v:2 * v + 3, :] for v in range(4)] for h in range(4)])
  conv = np.einsum("hvbkli,oikl->bhvo", patches, w)
  bn = lambda k: sd[f"Conv2d_1a_3x3.bn.{k}"]
  expected = np.maximum((conv - bn("running_mean")) / np.sqrt(bn("running_var") + inc.BN_EPSILON) * bn("weight")
                        + bn("bias"), 0)
  layer = inc.BasicConv(32, (3, 3), strides=2)
  got = layer.apply({"params": variables["params"]["Conv2d_1a_3x3"],
                     "batch_stats": variables["batch_stats"]["Conv2d_1a_3x3"]}, x)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  pool = np.random.default_rng(2).normal(size=(3, 2048)).astype(np.float32)
  fc = jax.numpy.dot(pool, variables["params"]["fc"]["kernel"]) + variables["params"]["fc"]["bias"]
  np.testing.assert_allclose(fc, pool @ sd["fc.weight"].T + sd["fc.bias"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_features_are_per_image_and_grey_images_are_replicated(random_variables):
  extractor = inc.InceptionFeatures(variables=random_variables, batch_size=3, resize_to=75)
  grey = np.random.default_rng(3).uniform(size=(4, 8, 8, 1)).astype(np.float32)
  pool, logits = extractor(grey)                                       # batches of 3: 3 + (1 padded to 3)
  assert pool.shape == (4, 2048) and logits.shape == (4, 1008)
  assert np.all(np.isfinite(pool)) and np.all(pool >= 0)               # a ReLU then an average
  single_pool, _ = inc.InceptionFeatures(variables=random_variables, batch_size=1, resize_to=75)(grey[3:])
  np.testing.assert_allclose(pool[3:], single_pool, rtol=1e-4, atol=1e-5)
  colour_pool, _ = extractor(np.repeat(grey, 3, axis=-1))
  np.testing.assert_allclose(pool, colour_pool, rtol=1e-5, atol=1e-6)
  assert np.abs(pool[0] - pool[1]).max() > 1e-4                       # different images, different features


def test_inception_score_closed_forms():
  k = 10
  assert inc.inception_score(np.zeros((100, k)), splits=1)[0] == pytest.approx(1.0)        # p(y|x) uniform
  confident = 50.0 * np.eye(k)[np.arange(200) % k]                    # certain, classes equally frequent
  assert inc.inception_score(confident, splits=2)[0] == pytest.approx(k, rel=1e-6)
  assert inc.inception_score(confident[:4], splits=10)[0] == pytest.approx(1.0)   # 4 parts of one: p(y) = p(y|x)
  one_class = 50.0 * np.eye(k)[np.zeros(200, int)]
  assert inc.inception_score(one_class, splits=1)[0] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.slow
def test_pool_features_equal_pytorch_fids_own_network():
  """pytorch-fid's FID Inception (its own code: torchvision Inception3 + FID blocks, resize and
  normalisation) with seeded weights, run by tests/reference/make_pytorch_fid_fixtures.py; the same
  weights rebuilt here from the seed give the same pool features to 1e-4 relative error."""
  import json
  import os

  from testkit.seeded import seeded_state

  with np.load(os.path.join(os.path.dirname(__file__), "reference", "data", "pytorch_fid_inception.npz")) as f:
    fx = {k: f[k] for k in f.files}
  manifest = list(zip([str(n) for n in fx["names"]], json.loads(str(fx["shapes"]))))
  variables = inc.variables_from_state_dict(seeded_state(manifest, int(fx["seed"])))
  pool, _ = inc.InceptionFeatures(variables=jax.tree.map(jnp.asarray, variables), batch_size=2)(fx["x"])
  error = float(np.max(np.abs(pool - fx["pool"])) / np.max(np.abs(fx["pool"])))
  assert error <= 1e-4, error
