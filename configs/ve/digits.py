"""Digits (the embedded offline default) under the VE SDE."""

from configs.default_digits import get_digits_config


def get_config():
  return get_digits_config("vesde")
