"""Toy problems: the oracle's 2-D Gaussian mixture (data_lib.example_mixture) with a small MLP.

Trains in a few minutes on two CPU cores (benchmarks/toy.py); evaluation compares samples with the exact mixture
(mode weights, means and spreads against the noise floor of exact samples of the same size) and the
model's likelihood of a test sample with the exact one.
"""

from configs.default_cifar10_configs import get_default_configs, set_small_pc_sampler


def get_toy_config(sde: str):
  config = get_default_configs()
  training = config.training
  training.sde = sde
  training.batch_size = 512
  training.n_iters = 10000
  training.snapshot_freq = 5000
  training.snapshot_freq_for_preemption = 1000
  training.log_freq = 200
  training.eval_freq = 1000
  training.snapshot_samples = 2048
  training.reduce_mean = True

  data = config.data
  data.dataset = "GMM"
  data.mixture = "example"                   # data_lib.example_mixture(dim): four modes, weights .5/.25/.15/.10
  data.dim = 2
  data.test_size = 4096                      # the fixed test sample (likelihood, evaluation)
  for image_field in ("image_size", "random_flip", "centered", "uniform_dequantization", "num_channels", "data_dir"):
    del data[image_field]                    # not images

  model = config.model
  model.name = "mlp"
  del model["dropout"]                       # the MLP has none
  model.hidden = 256
  model.depth = 3
  model.nf = 64
  model.embedding_type = "fourier" if sde == "vesde" else "positional"
  model.fourier_scale = 16.0
  model.scale_by_sigma = sde == "vesde"
  model.ema_rate = 0.999
  model.sigma_min = 0.01
  model.sigma_max = 20.0                     # above the largest distance between points (~16)

  config.optim.lr = 2e-3
  config.optim.warmup = 100
  config.optim.grad_clip = 1.0

  set_small_pc_sampler(config.sampling, sde, num_steps=500)

  evaluate = config.eval
  evaluate.begin_ckpt = 1                    # every snapshot (steps 5000 and 10000)
  evaluate.end_ckpt = 2
  evaluate.batch_size = 4096
  evaluate.num_samples = 4096
  evaluate.enable_bpd = True                 # here: NLL in nats/dim, model and exact
  evaluate.bpd_max_examples = 1024
  return config
