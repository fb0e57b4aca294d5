"""The NCSN++ / DDPM++ network fields of score_sde's CIFAR-10 configurations (shared by the variants)."""


def set_ncsnpp(model, *, fir: bool, progressive_input: str, embedding_type: str, scale_by_sigma: bool,
               ema_rate: float, num_res_blocks: int = 4):
  """NCSN++ (fir=True, progressive_input='residual') or DDPM++ (fir=False, 'none') at CIFAR-10 size."""
  model.name = "ncsnpp"
  model.scale_by_sigma = scale_by_sigma
  model.ema_rate = ema_rate
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = num_res_blocks
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = fir
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = "biggan"
  model.progressive = "none"
  model.progressive_input = progressive_input
  model.progressive_combine = "sum"
  model.embedding_type = embedding_type
  model.fourier_scale = 16.0
  model.init_scale = 0.0
  return model
