"""DDPM (Ho et al. 2020) on the discrete ladder (score_sde's vp/ddpm/cifar10): 35,218,947 parameters."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vpsde"
  config.training.continuous = False
  config.training.reduce_mean = True
  config.sampling.method = "pc"
  config.sampling.pc.predictor = "ancestral_sampling"
  config.sampling.pc.corrector = "none"
  config.data.centered = True
  model = config.model
  model.name = "ddpm"
  del model["embedding_type"]                # DDPM always embeds time steps positionally
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  return config
