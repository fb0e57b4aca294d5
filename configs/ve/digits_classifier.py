"""A noise-conditional digits classifier under the VE SDE (classifier guidance of configs/ve/digits.py)."""

from configs.default_digits import get_digits_classifier_config


def get_config():
  return get_digits_classifier_config("vesde")
