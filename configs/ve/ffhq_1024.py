"""NCSN++ continuous VE on FFHQ 1024x1024 (score_sde's ve/ffhq_ncsnpp_continuous); images from data.path."""

from configs.default_highres_ve import get_highres_ve_config


def get_config():
  config = get_highres_ve_config(dataset="FOLDER", image_size=1024, sigma_max=1348.0)
  config.training.batch_size = 8
  config.training.reduce_mean = True
  config.sampling.pc.snr = 0.15
  config.eval.begin_ckpt = 1
  config.eval.end_ckpt = 96
  config.eval.batch_size = 1024
  config.model.ema_rate = 0.9999
  config.model.nf = 16
  config.model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  config.model.num_res_blocks = 1
  return config
