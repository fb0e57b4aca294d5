"""DDPM's network trained with the continuous VP SDE (score_sde's vp/ddpm/cifar10_continuous)."""

from configs.vp import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.continuous = True
  config.sampling.pc.predictor = "euler_maruyama"
  return config
