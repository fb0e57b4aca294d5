"""NCSN++ continuous VE on CIFAR-10 (score_sde's ve/cifar10_ncsnpp_continuous)."""

from configs.default_cifar10_configs import get_default_configs
from configs.ncsnpp_fields import set_ncsnpp


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.training.continuous = True
  config.sampling.method = "pc"
  config.sampling.pc.predictor = "reverse_diffusion"
  config.sampling.pc.corrector = "langevin"
  set_ncsnpp(config.model, fir=True, progressive_input="residual", embedding_type="fourier",
             scale_by_sigma=True, ema_rate=0.999)
  return config
