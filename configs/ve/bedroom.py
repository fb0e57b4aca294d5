"""NCSN++ continuous VE on LSUN bedroom 256x256 (score_sde's ve/bedroom_ncsnpp_continuous)."""

from configs.default_highres_ve import get_highres_ve_config


def get_config():
  return get_highres_ve_config(dataset="LSUN", category="bedroom", image_size=256, sigma_max=378.0)
