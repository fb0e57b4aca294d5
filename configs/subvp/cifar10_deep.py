"""DDPM++ deep continuous sub-VP (score_sde's subvp/cifar10_ddpmpp_deep_continuous)."""

from configs.subvp import cifar10


def get_config():
  config = cifar10.get_config()
  config.training.n_iters = 950001
  config.model.num_res_blocks = 8
  return config
