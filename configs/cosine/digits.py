"""Digits (the embedded offline default) under the cosine schedule, trained by flow matching: the VP digits
network (positional time embedding), velocity parameterisation and loss. Its sampler is the digits default
(EDM's stochastic Heun at 35 NFE), not measured on this process (benchmarks/results/digits_flow.md measures
rectified flow and VP)."""

from configs.default_cifar10_configs import set_flow_matching
from configs.default_digits import get_digits_config


def get_config():
  return set_flow_matching(get_digits_config("cosine"))
