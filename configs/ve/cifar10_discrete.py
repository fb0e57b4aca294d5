"""NCSN++ on the discrete SMLD ladder, positional embedding (score_sde's ve/cifar10_ncsnpp)."""

from configs.ve import cifar10


def get_config():
  config = cifar10.get_config()
  config.training.continuous = False
  config.model.embedding_type = "positional"
  return config
