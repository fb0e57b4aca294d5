"""NCSN++ deep (8 residual blocks per resolution) continuous VE (score_sde's ve/cifar10_ncsnpp_deep_continuous)."""

from configs.ve import cifar10


def get_config():
  config = cifar10.get_config()
  config.training.n_iters = 950001
  config.model.num_res_blocks = 8
  return config
