"""Rectified flow on CIFAR-10 with flow matching: configs/vp/cifar10.py's DDPM++ continuous network, data and
sampler, with the rectified-flow process, velocity parameterisation and loss."""

from configs.default_cifar10_configs import set_flow_matching
from configs.vp import cifar10 as vp_cifar10


def get_config():
  config = vp_cifar10.get_config()
  config.training.sde = "rectified_flow"
  set_flow_matching(config)
  return config
