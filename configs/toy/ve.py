"""The 2-D Gaussian-mixture toy under the VE SDE, with an MLP."""

from configs.default_toy import get_toy_config


def get_config():
  return get_toy_config("vesde")
