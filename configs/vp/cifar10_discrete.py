"""DDPM++ on the discrete DDPM ladder (score_sde's vp/cifar10_ddpmpp): ancestral sampling on its ladder."""

from configs.vp import cifar10


def get_config():
  config = cifar10.get_config()
  config.training.continuous = False
  config.sampling.pc.predictor = "ancestral_sampling"
  config.sampling.pc.corrector = "none"
  return config
