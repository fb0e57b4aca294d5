"""Published score_sde checkpoints: safe reading, format detection, conversion, equivalence with the
reference networks (fixtures made by tests/reference/make_score_sde_*_fixtures.py from the reference code)."""

import glob
import json
import os
import pickle
import subprocess
import sys
import zipfile

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs.default_cifar10_configs import get_default_configs
from models import port, torch_pickle
from tests.reference.seeded import seeded_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "reference", "data")


class _RunsCommand:
  """Unpickling this calls os.system(command): what a malicious checkpoint would do."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def _zip_with_pickle(path, payload):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("checkpoint_1/data.pkl", pickle.dumps(payload, protocol=2))
    archive.writestr("checkpoint_1/version", "3\n")


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "checkpoint_1.pth"
  _zip_with_pickle(path, {"model": _RunsCommand(f"touch {marker}")})
  with pytest.raises(torch_pickle.UnsafePickleError, match=r"refusing the global '(posix|os|nt)\.system'"):
    models.read_checkpoint(str(path))
  assert not marker.exists()
  # The command line says so in one line and exits 2, without running it either.
  out = subprocess.run([sys.executable, "-m", "models.convert", str(path), "--config", "configs/ve/cifar10.py",
                        "--workdir", str(tmp_path / "w")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
  assert out.returncode == 2 and out.stderr.startswith("error: refusing the global"), out.stderr
  assert len(out.stderr.strip().splitlines()) == 1
  assert not marker.exists()


def test_formats_are_detected_from_contents(tmp_path):
  pth, msgpack, other, raw = (tmp_path / n for n in ("checkpoint_1", "model.pth", "notes.pth", "old.pth"))
  _zip_with_pickle(pth, {"model": {}})
  msgpack.write_bytes(flax.serialization.msgpack_serialize({"step": 1, "optimizer": {"target": {}}, "params_ema": {}}))
  other.write_text("hello")
  raw.write_bytes(pickle.dumps({"a": 1}, protocol=2))
  assert models.published.detect_format(str(pth)) == "score_sde_pytorch"          # no extension: still a .pth
  assert models.published.detect_format(str(msgpack)) == "score_sde"               # named .pth: still msgpack
  with pytest.raises(ValueError, match="neither"):
    models.published.detect_format(str(other))
  with pytest.raises(ValueError, match="raw pickle"):
    models.published.detect_format(str(raw))
  with pytest.raises(FileNotFoundError):
    models.published.detect_format(str(tmp_path / "absent"))


def test_storages_are_rebuilt_with_offsets_strides_and_byte_order(tmp_path):
  """A hand-written torch zip: a transposed view at an offset into a shared storage, big-endian."""
  class Storage:                                     # pickled by reference as torch.FloatStorage
    pass
  Storage.__module__, Storage.__qualname__ = "torch", "FloatStorage"

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", Storage, "0", "cpu", 7) if obj is STORAGE else None

  class Tensor:
    def __init__(self, offset, size, stride):
      self.args = (STORAGE, offset, size, stride, False, None)

    def __reduce__(self):
      return (REBUILD, self.args)

  def rebuild():
    pass
  rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  REBUILD, STORAGE = rebuild, object()
  import io
  buf = io.BytesIO()
  sys.modules.setdefault("torch", type(sys)("torch")).FloatStorage = Storage
  sys.modules.setdefault("torch._utils", type(sys)("torch._utils"))._rebuild_tensor_v2 = rebuild
  try:
    Pickler(buf, protocol=2).dump({"t": Tensor(1, (3, 2), (1, 3)), "s": Tensor(6, (), ())})
  finally:
    del sys.modules["torch"], sys.modules["torch._utils"]
  path = tmp_path / "x.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("x/data.pkl", buf.getvalue())
    archive.writestr("x/byteorder", "big")
    archive.writestr("x/data/0", np.arange(7, dtype=">f4").tobytes())
  out = torch_pickle.load_pth(str(path))
  np.testing.assert_array_equal(out["t"], np.arange(1, 7, dtype=np.float32).reshape(2, 3).T)
  assert out["t"].dtype == np.float32 and float(out["s"]) == 6.0
