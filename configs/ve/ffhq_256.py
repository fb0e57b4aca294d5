"""NCSN++ continuous VE on FFHQ 256x256 (score_sde's ve/ffhq_256_ncsnpp_continuous); images from data.path."""

from configs.default_highres_ve import get_highres_ve_config


def get_config():
  return get_highres_ve_config(dataset="FOLDER", image_size=256, sigma_max=348.0)
