"""Base configuration: score_sde's field names and CIFAR-10 defaults, every field commented.

Variants import ``get_default_configs()`` and override only what differs.
"""

import ml_collections


def get_default_configs():
  config = ml_collections.ConfigDict()

  config.training = training = ml_collections.ConfigDict()
  training.sde = "vesde"                     # vesde | vpsde | subvpsde
  training.batch_size = 128                  # global batch, split over all devices
  training.n_iters = 1300001                 # optimisation steps
  training.snapshot_freq = 50000             # steps between kept checkpoints (with an EMA sample grid)
  training.snapshot_freq_for_preemption = 10000   # steps between the overwritten preemption checkpoint
  training.log_freq = 50                     # steps between logged training losses
  training.eval_freq = 100                   # steps between evaluation losses on the test split
  training.snapshot_sampling = True          # draw a sample grid at each snapshot
  training.continuous = True                 # continuous-time DSM (else the discrete SMLD/DDPM ladder)
  training.reduce_mean = False               # mean over dimensions (else half the sum)
  training.likelihood_weighting = False      # lambda(t) = g(t)^2 (else the kernel variance)
  training.steps_per_call = 1                # optimisation steps per jitted call (lax.scan)

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"                     # pc | ode | ald | edm_heun | dpm_solver_pp
  sampling.predictor = "reverse_diffusion"   # pc: euler_maruyama | reverse_diffusion | ancestral_sampling | none
  sampling.corrector = "langevin"            # pc: langevin | ald | none
  sampling.n_steps_each = 1                  # pc: corrector steps per noise level
  sampling.noise_removal = True              # finish with Tweedie's denoising step
  sampling.probability_flow = False          # pc: predict with the probability-flow ODE
  sampling.snr = 0.16                        # pc: the corrector's signal-to-noise ratio
  sampling.n_steps = 0                       # ode: fixed steps (0: adaptive); edm_heun/dpm_solver_pp: N (0: default)
  sampling.rtol = 1e-5                       # ode: tolerances of the adaptive solver
  sampling.atol = 1e-5

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 9                    # first and last checkpoint to evaluate, numbered ceil(step / snapshot_freq)
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024
  evaluate.enable_sampling = True
  evaluate.num_samples = 50000
  evaluate.enable_loss = True
  evaluate.enable_bpd = False
  evaluate.bpd_dataset = "test"
  evaluate.bpd_max_examples = 0              # 0: the whole test split
  evaluate.inception_path = ""               # local FID Inception-v3 weights, .npz or .pth (see evaluation/inception.py)
  evaluate.inception_batch_size = 100
  evaluate.fid_reference_split = "train"      # FID/KID against this split's Inception features (cached in the eval folder)
  evaluate.fid_reference_examples = 0         # 0: the whole split
  evaluate.kid_reference_examples = 10000     # reference features kept for KID

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "CIFAR10"                   # CIFAR10 | CELEBA | SVHN | LSUN | DIGITS
  data.image_size = 32
  data.random_flip = True
  data.centered = False                      # data in [-1, 1] (else [0, 1])
  data.uniform_dequantization = False
  data.num_channels = 3
  data.data_dir = ""                         # tensorflow-datasets directory ("" = its default)

  config.model = model = ml_collections.ConfigDict()
  model.name = "ncsnpp"                      # ncsnpp | ddpm | mlp
  model.sigma_min = 0.01                     # VE
  model.sigma_max = 50.0
  model.beta_min = 0.1                       # VP, sub-VP
  model.beta_max = 20.0
  model.num_scales = 1000                    # N of the discrete ladder
  model.dropout = 0.1
  model.embedding_type = "fourier"           # fourier | positional
  model.parameterization = "reference"       # reference | epsilon | edm (models.get_score_fn)

  config.optim = optim = ml_collections.ConfigDict()
  optim.weight_decay = 0.0
  optim.optimizer = "Adam"
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 5000                        # linear learning-rate warm-up steps
  optim.grad_clip = 1.0                      # global-norm clipping (<= 0: none)

  config.seed = 42
  return config


def set_small_pc_sampler(sampling, sde: str, n_steps: int = 500):
  """The small configs' PC sampler: reverse diffusion + Langevin on VE, Euler-Maruyama alone otherwise."""
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion" if sde == "vesde" else "euler_maruyama"
  sampling.corrector = "langevin" if sde == "vesde" else "none"
  sampling.n_steps = n_steps
  return sampling
