import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sde_lib  # noqa: E402


@pytest.fixture
def key():
  return jax.random.key(0)


def all_sdes(N: int = 1000):
  """One instance of every SDE with score_sde's CIFAR-10 parameters."""
  return [sde_lib.VESDE(0.01, 50.0, N), sde_lib.VPSDE(0.1, 20.0, N), sde_lib.subVPSDE(0.1, 20.0, N)]


SDE_IDS = ["ve", "vp", "subvp"]
