"""DDPM's network trained with the continuous sub-VP SDE (score_sde's subvp/cifar10_ddpm_continuous)."""

from configs.vp import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.sde = "subvpsde"
  config.training.continuous = True
  config.sampling.pc.predictor = "euler_maruyama"
  return config
