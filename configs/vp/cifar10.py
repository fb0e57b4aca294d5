"""DDPM++ continuous VP on CIFAR-10 (score_sde's vp/cifar10_ddpmpp_continuous)."""

from configs.default_cifar10_configs import get_default_configs
from configs.ncsnpp_fields import set_ncsnpp


def get_config():
  config = get_default_configs()
  config.training.sde = "vpsde"
  config.training.continuous = True
  config.training.reduce_mean = True
  config.sampling.method = "pc"
  config.sampling.pc.predictor = "euler_maruyama"
  config.sampling.pc.corrector = "none"
  config.data.centered = True
  set_ncsnpp(config.model, fir=False, progressive_input="none", embedding_type="positional",
             scale_by_sigma=False, ema_rate=0.9999)
  return config
