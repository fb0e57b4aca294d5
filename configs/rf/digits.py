"""Digits (the embedded offline default) under rectified flow, trained by flow matching: the VP digits
network (positional time embedding), training steps and seed, with the velocity parameterisation and loss.

    python main.py --config configs/rf/digits.py --workdir runs/digits_rf --mode train
    python main.py --config configs/rf/digits.py --workdir runs/digits_rf --mode sample
"""

from configs.default_cifar10_configs import set_flow_matching
from configs.default_digits import get_digits_config


def get_config():
  config = set_flow_matching(get_digits_config("rectified_flow"))
  return config
