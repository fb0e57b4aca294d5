"""The 2-D Gaussian-mixture toy under the sub-VP SDE, with an MLP."""

from configs.default_toy import get_toy_config


def get_config():
  return get_toy_config("subvpsde")
