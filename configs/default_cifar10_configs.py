"""Base configuration: score_sde's field names and CIFAR-10 defaults, every field commented.

Variants import ``get_default_configs()`` and override only what differs.
"""

import ml_collections

from schema.defaults import sampling_config, training_defaults


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
  training.weighting = "score"               # lambda(t): score (s^2), likelihood (g^2), velocity (flow matching)
  training.steps_per_call = 1                # optimisation steps per jitted call (lax.scan)
  training.t_min = 1e-5                      # the loss's smallest time
  training.task = "score"                    # score | classifier (a noise-conditional classifier, model.name=classifier)
  training.label_dropout = 0.1               # class-conditional networks: share of labels dropped to the null label
  # How to run, not what is learnt (schema.Training's defaults, generated): snapshot_samples, remat ("none" | "full"
  # | "dots"), compute_dtype ("float32" | "bfloat16"), backward ("auto" | "xla" | "materialised" | "taps").
  training_defaults(training)

  # Generated from the typed defaults (schema.defaults): sampling.method picks one of the per-method sections
  # (pc | ode | ald | edm_heun | dpm_solver_pp | unipc; each the sampler's options dataclass, e.g.
  # samplers.PCOptions); sampling.t_min / denoise / nfe apply to every method (None: its own default);
  # sampling.condition = none | inpaint | colorize | class | inverse with sampling.inpaint, the class fields
  # (class_label, guidance_scale, guidance_interval: () or the noise levels (sigma_lo, sigma_hi] where the scale
  # applies, e.g. --config.sampling.guidance_interval=0.3,5.0; classifier_config, classifier_workdir)
  # and sampling.inverse (operator, noise_std, algorithm, the operator's parameters, the algorithm's options).
  config.sampling = sampling_config()

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
  data.path = ""                             # FOLDER: a folder of images, ARRAY: an .npz (data_lib/images.py)
  # Image data are bounded: the data-prediction samplers clip their x0 = D(x, t) to the data range (static
  # thresholding, Saharia et al. 2022 sec. 2.3; samplers.common.thresholder), [-1, 1] if data.centered else
  # [0, 1] (a reference: a variant that sets data.centered moves it). Static, not dynamic: on the digits default
  # it keeps every sample inside PC's range at the same FID, dynamic costs FID
  # (benchmarks/results/thresholding_digits.md). The samplers' own default is "none".
  for method in ("edm_heun", "dpm_solver_pp", "unipc"):
    config.sampling[method].thresholding = "static"
    config.sampling[method].data_min = data.get_ref("centered").to_float() * -1.0 + 0.0   # -1 or 0
    config.sampling[method].data_max = 1.0

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


def set_flow_matching(config):
  """Flow matching on a schedule process (rectified_flow, cosine): the network predicts the velocity
  v = a'(t) x(0) + s'(t) eps (models.get_score_fn) and the DSM loss is weighted to equal the conditional
  flow-matching loss |v_theta - v|^2 (Lipman et al. 2023; Liu et al. 2023), in continuous time."""
  config.training.continuous = True
  config.training.weighting = "velocity"
  config.model.parameterization = "velocity"
  return config
