"""Rectified flow on CIFAR-10 with flow matching: the DDPM++ continuous network of configs/vp/cifar10.py
(positional time embedding), velocity parameterisation and loss."""

from configs.default_cifar10_configs import get_default_configs, set_flow_matching
from configs.ncsnpp_fields import set_ncsnpp


def get_config():
  config = get_default_configs()
  config.training.sde = "rectified_flow"
  config.training.reduce_mean = True
  set_flow_matching(config)
  config.sampling.method = "pc"
  config.sampling.pc.predictor = "euler_maruyama"
  config.sampling.pc.corrector = "none"
  config.data.centered = True
  set_ncsnpp(config.model, fir=False, progressive_input="none", embedding_type="positional",
             scale_by_sigma=False, ema_rate=0.9999)
  return config
