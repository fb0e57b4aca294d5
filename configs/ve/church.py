"""NCSN++ continuous VE on LSUN church_outdoor 256x256 (score_sde's ve/church_ncsnpp_continuous)."""

from configs.default_highres_ve import get_highres_ve_config


def get_config():
  return get_highres_ve_config(dataset="LSUN", category="church_outdoor", image_size=256, sigma_max=380.0)
