import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sde_lib  # noqa: E402


def pytest_configure(config):
  # The two tiers: `bash scripts/test.sh -m "not slow"` runs the fast one (every change; under 3 minutes on 2
  # cores), `bash scripts/test.sh` everything (CI). A test is marked slow when it took >= 4 s on 2 cores
  # (its slowest case, call + setup; measured with --durations=0).
  config.addinivalue_line("markers", "slow: takes >= 4 s; left out of the fast tier (-m 'not slow')")


@pytest.fixture
def key():
  return jax.random.key(0)


def all_sdes(N: int = 1000):
  """One instance of every SDE with score_sde's CIFAR-10 parameters, and rectified flow."""
  return [sde_lib.VESDE(0.01, 50.0, N), sde_lib.VPSDE(0.1, 20.0, N), sde_lib.subVPSDE(0.1, 20.0, N),
          sde_lib.RectifiedFlow(N)]


SDE_IDS = ["ve", "vp", "subvp", "rf"]
