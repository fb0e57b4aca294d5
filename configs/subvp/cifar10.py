"""DDPM++ continuous sub-VP on CIFAR-10 (score_sde's subvp/cifar10_ddpmpp_continuous)."""

from configs.vp import cifar10


def get_config():
  config = cifar10.get_config()
  config.training.sde = "subvpsde"
  return config
