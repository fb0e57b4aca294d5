"""Digits (the embedded offline default) under the cosine schedule, trained by flow matching: the VP digits
network (positional time embedding), velocity parameterisation and loss."""

from configs.default_cifar10_configs import set_flow_matching
from configs.default_digits import get_digits_config


def get_config():
  return set_flow_matching(get_digits_config("cosine"))
