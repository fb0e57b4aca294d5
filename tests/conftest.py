import os
import sys

# One BLAS thread per process. The suite runs two workers on CI's two cores (and the main.py runs they
# start); OpenBLAS's default of a thread per core oversubscribes them, and its spinning threads made the
# digits classifier's scikit-learn fit (evaluation/digits_classifier.py, in every digits evaluation)
# 2.7x slower on a loaded machine (5.4 s with one thread, 14.9 s with two; the same weights bit for bit).
# numpy's OpenBLAS is loaded before this file runs (threadpoolctl limits it); the variable reaches the
# BLAS libraries loaded later and every child process. A value the caller set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import threadpoolctl  # noqa: E402

threadpoolctl.threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.experimental import io_callback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sde_lib  # noqa: E402
from data_lib.gmm import example_mixture  # noqa: E402

# Samples per oracle sampler test; ``floor`` is of exact samples of the same size.
ORACLE_SAMPLES = 4096


def pytest_configure(config):
  # The two tiers: `bash scripts/test.sh -m "not slow"` runs the fast one (every change; under 4 minutes on 2
  # cores), `bash scripts/test.sh` everything (CI). A test is marked slow when it took >= 4 s on 2 cores
  # (its slowest case, call + setup; measured with --durations=0).
  config.addinivalue_line("markers", "slow: takes >= 4 s; left out of the fast tier (-m 'not slow')")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def mixture():
  """The 2-D oracle mixture of the sampler tests (``data_lib.gmm.example_mixture(2)``); a test module may
  define its own."""
  return example_mixture(2)


@pytest.fixture(scope="session")
def floor(mixture):
  """99th percentile of each mode metric over 200 exact samples of ORACLE_SAMPLES."""
  return mixture.metric_floor(jax.random.key(123), ORACLE_SAMPLES)


def all_sdes(N: int = 1000):
  """One instance of every SDE with score_sde's CIFAR-10 parameters, and rectified flow."""
  return [sde_lib.VESDE(0.01, 50.0, N), sde_lib.VPSDE(0.1, 20.0, N), sde_lib.subVPSDE(0.1, 20.0, N),
          sde_lib.RectifiedFlow(N)]


SDE_IDS = ["ve", "vp", "subvp", "rf"]


class EvaluationCounter:
  """Counts score evaluations as they execute (not as they are traced): ``counter.wrap(score_fn)``."""

  def __init__(self):
    self.count = 0

  def _inc(self):
    self.count += 1
    return np.int32(0)

  def wrap(self, fn):
    def counted(*args):
      token = io_callback(self._inc, jax.ShapeDtypeStruct((), jnp.int32), ordered=True)
      return jax.tree.map(lambda v: v + 0 * token, fn(*args))
    return counted
