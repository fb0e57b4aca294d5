"""The published high-resolution NCSN++ VE models (score_sde's ``configs/default_lsun_configs.py`` and
``configs/ve/{bedroom,church,ffhq_256,celebahq_256,ffhq}_ncsnpp_continuous.py``), with the reference's
fields. They are for loading the published checkpoints (``python -m tools.convert_checkpoint``) and sampling;
training them takes GPU-weeks. LSUN reads through tensorflow-datasets (``data.category`` picks
``lsun/<category>``); FFHQ and CelebA-HQ, which tfds does not ship prepared, read a folder of images
(``--config.data.path=DIR``, see the README's "Your own data").
"""

from configs.default_cifar10_configs import get_default_configs


def get_highres_ve_config(*, dataset: str, image_size: int, sigma_max: float, category: str = ""):
  """The 256x256 NCSN++ (nf 128, ch_mult 1,1,2,2,2,2,2) of bedroom, church, FFHQ-256 and CelebA-HQ-256."""
  config = get_default_configs()
  training = config.training
  training.sde = "vesde"
  training.continuous = True
  training.batch_size = 64
  training.n_iters = 2400001
  training.snapshot_freq = 50000
  training.snapshot_freq_for_preemption = 5000
  training.reduce_mean = False

  sampling = config.sampling
  sampling.method = "pc"
  sampling.pc.predictor = "reverse_diffusion"
  sampling.pc.corrector = "langevin"
  sampling.pc.snr = 0.075

  evaluate = config.eval
  evaluate.begin_ckpt = 50
  evaluate.end_ckpt = 96
  evaluate.batch_size = 512

  data = config.data
  data.dataset = dataset
  data.category = category
  data.image_size = image_size
  data.centered = False
  data.random_flip = True

  model = config.model
  model.name = "ncsnpp"
  model.sigma_min = 0.01
  model.sigma_max = sigma_max
  model.num_scales = 2000
  model.dropout = 0.0
  model.embedding_type = "fourier"
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = "biggan"
  model.progressive = "output_skip"
  model.progressive_input = "input_skip"
  model.progressive_combine = "sum"
  model.init_scale = 0.0
  model.fourier_scale = 16.0
  return config
