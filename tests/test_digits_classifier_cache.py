"""The digits classifier: shipped for seed 0 (every digits metric's), cached in the workdir for other seeds;
plain arrays, read without unpickling and checked before use.

The shipped file must be what training seed 0 gives (else every digits FID would silently change). A
workdir can come from someone else, so its ``eval/digits_classifier.npz`` is hostile until checked:
pickles (at the old ``.pkl`` name or the new ``.npz`` one) whose loading would run ``touch MARKER``
must never be executed, and a file that is not exactly the expected arrays is retrained over, with
a warning naming it.
"""

import logging
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

from data_lib.images import load_digits_arrays
from evaluation import digits_classifier
from evaluation.digits_classifier import CACHE_NAME, SHAPES, SHIPPED, DigitsFeatures, read_cache

SEED = 1                   # the workdir cache's tests: seed 0 reads the shipped file instead


class Evil:
  """Unpickling it runs ``touch <marker>`` (pickle's REDUCE opcode calling os.system)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """DigitsFeatures (seed ``SEED``) trained once into a cache directory, and the sklearn classifier it trained."""
  fitted = []
  fit = MLPClassifier.fit

  def spy(self, *args, **kwargs):
    fitted.append(fit(self, *args, **kwargs))
    return fitted[-1]

  cache = str(tmp_path_factory.mktemp("cache"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(MLPClassifier, "fit", spy)
    feats = DigitsFeatures(cache, seed=SEED)
  assert len(fitted) == 1
  return cache, feats, fitted[0]


@pytest.mark.slow
def test_numpy_forward_pass_equals_sklearn(trained):
  """predict from the cached arrays == MLPClassifier.predict on the test digits, and test_accuracy ==
  MLPClassifier.score; features is the ReLU hidden layer; a second instance reads the cache (no fit)."""
  cache, feats, clf = trained
  _, _, x_test, y_test = load_digits_arrays()
  flat = x_test.reshape(len(x_test), -1) / 255.0
  assert list(clf.classes_) == list(range(10))
  np.testing.assert_array_equal(feats.predict(x_test / 255.0), clf.predict(flat))
  assert feats.test_accuracy == clf.score(flat, y_test) > 0.95
  hidden = np.maximum(flat @ clf.coefs_[0] + clf.intercepts_[0], 0)
  np.testing.assert_array_equal(feats.features(x_test / 255.0), hidden)
  with np.load(os.path.join(cache, CACHE_NAME), allow_pickle=False) as stored:
    assert sorted(stored.files) == sorted(SHAPES)
  again = DigitsFeatures(cache, seed=SEED)
  assert again.test_accuracy == feats.test_accuracy
  np.testing.assert_array_equal(again.predict(x_test / 255.0), clf.predict(flat))


def test_the_shipped_classifier_is_seed_0s_training_and_is_read_not_trained(tmp_path, monkeypatch):
  """The shipped arrays equal a fresh training with seed 0 (under the locked scikit-learn: bit for bit; under
  another release, the same predictions on the test digits and weights within 1e-6 of their scale), and the
  default DigitsFeatures reads them: it trains nothing and writes nothing into its cache directory, even when
  that holds a hostile cache file."""
  import sklearn

  shipped = read_cache(SHIPPED)
  fresh = digits_classifier._train(0)
  _, _, x_test, y_test = load_digits_arrays()
  with open(os.path.join(os.path.dirname(__file__), "..", "requirements-lock.txt")) as f:
    locked = f"scikit-learn=={sklearn.__version__}" in f.read().split()
  for name in SHAPES:
    if locked:
      np.testing.assert_array_equal(shipped[name], fresh[name], err_msg=f"{name}: run python -m tools.digits_classifier")
    else:
      np.testing.assert_allclose(shipped[name], fresh[name], atol=1e-6 * np.abs(fresh[name]).max(), err_msg=name)
  with open(tmp_path / CACHE_NAME, "wb") as f:
    pickle.dump(Evil(tmp_path / "MARKER"), f)
  monkeypatch.setattr(digits_classifier, "_train", lambda seed: pytest.fail("trained instead of reading the shipped file"))
  feats = DigitsFeatures(str(tmp_path))
  assert not (tmp_path / "MARKER").exists() and sorted(os.listdir(tmp_path)) == [CACHE_NAME]
  probe = DigitsFeatures.__new__(DigitsFeatures)
  probe._w0, probe._b0, probe._w1, probe._b1 = fresh["coef_0"], fresh["intercept_0"], fresh["coef_1"], fresh["intercept_1"]
  np.testing.assert_array_equal(feats.predict(x_test / 255.0), probe.predict(x_test / 255.0))
  assert feats.test_accuracy == float(np.mean(probe.predict(x_test / 255.0) == y_test)) > 0.95


def _valid(path, arrays, **changes):
  np.savez(path, **{**arrays, **changes})


def _hostile_files(arrays, marker):
  """name -> function writing a hostile or invalid file at a given path."""
  evil = Evil(marker)

  def pickle_file(path):
    with open(path, "wb") as f:
      pickle.dump(evil, f)

  def object_array(path):                               # np.savez pickles object arrays
    np.savez(path, **{**arrays, "coef_0": np.array([evil, evil], dtype=object)})

  def pickle_member(path):                              # an expected member holding a raw pickle, not .npy
    with zipfile.ZipFile(path, "w") as z:
      for name, a in arrays.items():
        z.writestr(f"{name}.npy", pickle.dumps(evil) if name == "classes" else _npy_bytes(a))

  def truncated(path):
    _valid(path, arrays)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  def huge(path):
    np.savez(path, **{**arrays, "coef_0": np.zeros((1024, 1024))})

  def unpacks_huge(path):                               # a small file that decompresses to 8 MB
    np.savez_compressed(path, **{**arrays, "coef_0": np.zeros((1024, 1024))})

  def corrupt_deflate(path):                            # compressed members with damaged bytes
    np.savez_compressed(path, **arrays)
    with open(path, "r+b") as f:
      f.seek(2000)
      f.write(bytes(64))

  def nan(path):
    coef = arrays["coef_1"].copy()
    coef[3, 4] = np.nan
    _valid(path, arrays, coef_1=coef)

  return {
      "pickle": pickle_file,
      "object_array": object_array,
      "pickle_member": pickle_member,
      "truncated": truncated,
      "corrupt_deflate": corrupt_deflate,
      "huge": huge,
      "unpacks_huge": unpacks_huge,
      "single_npy": lambda path: open(path, "wb").write(_npy_bytes(arrays["coef_0"])),
      "empty": lambda path: open(path, "wb").close(),
      "fifo": os.mkfifo,                                # opening it would block forever
      "missing_key": lambda path: np.savez(path, **{k: v for k, v in arrays.items() if k != "classes"}),
      "extra_key": lambda path: _valid(path, arrays, other=np.zeros(3)),
      "wrong_shape": lambda path: _valid(path, arrays, coef_1=arrays["coef_1"][:, :9]),
      "wrong_dtype": lambda path: _valid(path, arrays, intercept_0=arrays["intercept_0"].astype(np.float16)),
      "nan": nan,
      "classes_permuted": lambda path: _valid(path, arrays, classes=np.arange(10)[::-1]),
      "classes_float": lambda path: _valid(path, arrays, classes=np.arange(10.0)),
  }


def _npy_bytes(a):
  import io
  buf = io.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


CASES = ["pickle", "object_array", "pickle_member", "truncated", "corrupt_deflate", "huge", "unpacks_huge",
         "single_npy", "empty", "fifo", "missing_key", "extra_key", "wrong_shape", "wrong_dtype", "nan",
         "classes_permuted", "classes_float"]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_cache_is_never_executed_nor_trusted(tmp_path, trained, monkeypatch, caplog, case):
  """Each bad file at the cache's name: read_cache refuses it with one line naming it; DigitsFeatures
  warns, retrains (here: a stand-in returning the real arrays) and overwrites it; no code runs."""
  cache, reference, _ = trained
  arrays = read_cache(os.path.join(cache, CACHE_NAME))
  marker = tmp_path / "MARKER"
  evil_dir = tmp_path / "eval"
  evil_dir.mkdir()
  path = str(evil_dir / CACHE_NAME)
  _hostile_files(arrays, marker)[case](path)
  with open(evil_dir / "digits_classifier.pkl", "wb") as f:       # the old cache name: never opened
    pickle.dump(Evil(marker), f)

  with pytest.raises(ValueError, match=f"^{re.escape(path)}: not a digits classifier cache") as error:
    read_cache(path)
  assert "\n" not in str(error.value)
  trainings = []
  monkeypatch.setattr(digits_classifier, "_train", lambda seed: trainings.append(seed) or dict(arrays))
  with caplog.at_level(logging.WARNING):
    feats = DigitsFeatures(str(evil_dir), seed=SEED)
  assert not marker.exists()
  assert trainings == [SEED]
  assert any(path in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records), caplog.text
  _, _, x_test, _ = load_digits_arrays()
  np.testing.assert_array_equal(feats.predict(x_test / 255.0), reference.predict(x_test / 255.0))
  assert feats.test_accuracy == reference.test_accuracy
  for name, a in read_cache(path).items():                       # overwritten with the valid cache
    np.testing.assert_array_equal(a, arrays[name])
  assert not marker.exists()


def test_an_old_pickle_cache_is_ignored(tmp_path, trained, monkeypatch):
  """A workdir of an older version holds only digits_classifier.pkl: it is not read; the arrays are
  trained and cached beside it."""
  cache, reference, _ = trained
  marker = tmp_path / "MARKER"
  with open(tmp_path / "digits_classifier.pkl", "wb") as f:
    pickle.dump(Evil(marker), f)
  arrays = read_cache(os.path.join(cache, CACHE_NAME))
  monkeypatch.setattr(digits_classifier, "_train", lambda seed: dict(arrays))
  feats = DigitsFeatures(str(tmp_path), seed=SEED)
  assert not marker.exists() and os.path.exists(tmp_path / CACHE_NAME)
  assert feats.test_accuracy == reference.test_accuracy


def test_the_marker_pickle_does_run_when_unpickled(tmp_path):
  """The hostile files above are real: unpickling Evil does create the marker (so its absence means something)."""
  marker = tmp_path / "MARKER"
  pickle.loads(pickle.dumps(Evil(marker)))
  assert marker.exists()
