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
  training.t_min = 1e-5                      # the loss's smallest time
  training.task = "score"                    # score | classifier (a noise-conditional classifier, model.name=classifier)
  training.label_dropout = 0.1               # class-conditional networks: share of labels dropped to the null label

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"                     # pc | ode | ald | edm_heun | dpm_solver_pp | unipc: its section is used
  sampling.t_min = 1e-3                      # the last time every sampler reaches
  sampling.denoise = True                    # finish with Tweedie's denoising step (score_sde's noise_removal)
  sampling.nfe = 0                           # edm_heun | dpm_solver_pp | unipc: exact score-evaluation budget (0: num_steps)
  sampling.pc = ml_collections.ConfigDict(dict(
      predictor="reverse_diffusion",         # euler_maruyama | reverse_diffusion | ancestral_sampling | none
      corrector="langevin",                  # langevin | ald | none
      snr=0.16,                              # the corrector's signal-to-noise ratio
      corrector_steps=1,                     # corrector steps per noise level (score_sde's n_steps_each)
      num_steps=0,                           # predictor steps (0: the SDE's N; discrete models use their ladder)
      probability_flow=False,                # predict with the probability-flow ODE
      langevin_step_rule="batch",            # batch (score_sde's batch-averaged step) | expected (batch-independent)
      checkpoint=False))                     # jax.checkpoint every step: less memory when differentiating a sampler
  sampling.ode = ml_collections.ConfigDict(dict(
      solver="tsit5", rtol=1e-5, atol=1e-5,  # diffrax solver and its tolerances
      num_steps=0,                           # fixed equal steps (0: adaptive)
      max_steps=4096,
      adjoint="recursive_checkpoint"))       # gradients through the solve: recursive_checkpoint | backsolve | direct
  sampling.ald = ml_collections.ConfigDict(dict(
      num_steps=10,                          # noise levels
      corrector_steps=100,                   # Langevin steps per level
      langevin_step_size=0.0,                # epsilon (0: NCSN's 0.2 sigma_L^2)
      sigma_floor=0.01,                      # the lowest noise level
      checkpoint=False))
  sampling.edm_heun = ml_collections.ConfigDict(dict(
      num_steps=18, grid="edm", rho=7.0,     # levels (NFE 2 num_steps - 1); grid: edm | logsnr | fitted
      sigma_floor=0.01,                      # the lowest noise level (EDM's 0.002 widens sub-VP's modes)
      s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,   # EDM's stochastic churn (0: deterministic)
      checkpoint=False))
  sampling.dpm_solver_pp = ml_collections.ConfigDict(dict(
      num_steps=20, order=2,                 # steps (NFE num_steps + denoise); 2M or 3M (1: DDIM)
      lower_order_final=True,                # lower orders at the last steps (DPM-Solver++ below 15 steps)
      sigma_floor=0.01, grid="edm", rho=7.0,   # lowest noise level; edm (rho-spaced) | logsnr | fitted grid
      checkpoint=False))
  sampling.unipc = ml_collections.ConfigDict(dict(
      num_steps=20, order=2,                 # steps; UniP's order p (UniC corrects to p + 1)
      lower_order_final=True,
      sigma_floor=0.01, grid="logsnr", rho=7.0,
      checkpoint=False))

  sampling.condition = "none"                # --mode sample: none | inpaint | colorize (test images) | class
  sampling.class_label = -1                  # condition=class: the class (-1: sample i gets class i mod num_classes)
  sampling.guidance_scale = 1.0              # condition=class: guidance scale (1: the conditional score)
  sampling.classifier_config = ""            # condition=class, unconditional network: a classifier's config file
  sampling.classifier_workdir = ""           # ... and its run's workdir (classifier guidance)
  sampling.inpaint = ml_collections.ConfigDict(dict(
      algorithm="smc",                       # replacement (score_sde's) | repaint | smc (particle filter, exact as particles grow)
      mask="bottom_half",                    # inpaint: the unknown region, bottom_half | top_half | left_half | right_half | center
      n_particles=16, ess_threshold=0.5,     # smc: particles per image; resample when the ESS falls below this share
      n_resample=10))                        # repaint: times each step is taken

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 9                    # first and last checkpoint to evaluate, numbered ceil(step / snapshot_freq)
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024
  evaluate.enable_sampling = True
  evaluate.num_samples = 50000
  evaluate.enable_loss = True                # the training objective of the EMA parameters on the test split
  evaluate.enable_bpd = False                # bits/dim through the probability-flow ODE
  evaluate.bpd_dataset = "test"              # train | test
  evaluate.bpd_max_examples = 0              # 0: the whole split
  evaluate.bpd_rtol = 1e-5                   # bits/dim: probability-flow ODE tolerances, solver, time floor
  evaluate.bpd_atol = 1e-5
  evaluate.bpd_solver = "tsit5"
  evaluate.bpd_t_min = 1e-5
  evaluate.bpd_divergence = "hutchinson_rademacher"   # | hutchinson_gaussian | exact
  evaluate.bpd_n_probes = 1                  # Hutchinson probes per example
  evaluate.bpd_num_steps = 0                 # fixed equal steps (0: adaptive)
  evaluate.bpd_max_steps = 4096
  evaluate.bpd_per_sample = False            # each example its own step sizes (else one sequence per batch)
  evaluate.bpd_adjoint = "recursive_checkpoint"   # gradients of logp: recursive_checkpoint | backsolve | direct
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
  data.path = ""                             # FOLDER: a folder of images, ARRAY: an .npz (datasets/images.py)

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
  model.ema_rate = 0.9999                    # EMA of the parameters (warmed up: models.ema_warmup_rate)
  model.scale_by_sigma = False               # VE: divide the network output by sigma
  model.num_classes = 0                      # > 0: class-conditional (labelled data; classifier-free guidance)

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


def set_small_pc_sampler(sampling, sde: str, num_steps: int = 500):
  """The small configs' PC sampler: reverse diffusion + Langevin on VE, Euler-Maruyama alone otherwise."""
  sampling.method = "pc"
  sampling.pc.predictor = "reverse_diffusion" if sde == "vesde" else "euler_maruyama"
  sampling.pc.corrector = "langevin" if sde == "vesde" else "none"
  sampling.pc.num_steps = num_steps
  return sampling
