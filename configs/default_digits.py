"""The embedded offline default: scikit-learn's 8x8 digits with a small DDPM++-style U-Net.

Trains to recognisable digits in minutes on two CPU cores (benchmarks/digits.py measures it).
"""

import ml_collections

from configs.default_cifar10_configs import get_default_configs, set_small_pc_sampler
from configs.ncsnpp_fields import set_ncsnpp


def get_digits_config(sde: str):
  config = get_default_configs()
  training = config.training
  training.sde = sde
  # Batch 96: the step takes ~3/4 of batch 128's (its time is linear in the batch on 2 CPU cores) and the final
  # model scores the same (digits FID over 5 sampling seeds 1.26x the floor against 1.25x at batch 128). Batch 64
  # scored 1.37x, 1,000 steps at batch 128 1.33x; 900 steps at lr 3e-3 1.25x but trained longer (103 s against
  # 92 s); benchmarks/results/time_to_default_recipes_batch.md.
  training.batch_size = 96
  # 1,200 steps: on matched sampling seeds the step-1200 EMA model's eval loss equals step 1500's (0.0773 vs
  # 0.0766; step 1000: 0.0857) and its digits FID too (mean over 5 seeds 1.34x vs 1.30x the floor; the
  # former 2,000 steps: 1.40x over 3); benchmarks/results/time_to_default_steps.md.
  training.n_iters = 1200
  # One kept snapshot, the final one, evaluated by --mode eval; the preemption checkpoint every 500 steps is what
  # a crash resumes from. Intermediate snapshots cost the first impression a sampler run and an evaluation each:
  # python main.py ... --config.training.snapshot_freq=400 keeps steps 400, 800, 1200.
  training.snapshot_freq = 1200
  # No sample grid at the snapshot: --mode eval draws the same sampler's grid from it (eval/samples_step_1200.png)
  # a minute later, and the duplicate cost the first impression 7 s (compiling and running the sampler).
  # --config.training.snapshot_sampling=True draws one at every snapshot.
  training.snapshot_sampling = False
  training.snapshot_freq_for_preemption = 500
  training.log_freq = 100
  training.eval_freq = 500
  training.steps_per_call = 1                # see training/step.py: loops slow backward passes on CPU
  training.snapshot_samples = 64
  training.reduce_mean = True

  data = config.data
  data.dataset = "DIGITS"
  data.image_size = 8
  data.num_channels = 1
  data.centered = True
  data.random_flip = False                   # digits are not mirror-symmetric

  # One residual block per level and attention only in the 4x4 middle block (~180k parameters): the train step
  # takes 69 ms at batch 128 on 2 CPU cores against 120 ms with two blocks and attention at 4x4 too (~260k;
  # benchmarks/results/train_step_digits.md), at the same digits FID over 5 sampling seeds after 1,200 steps
  # (VP 1.25x vs 1.34x the floor; sub-VP 1.22x, VE 1.47x; results/time_to_default_network_*.md).
  model = set_ncsnpp(config.model, fir=False, progressive_input="none",
                     embedding_type="fourier" if sde == "vesde" else "positional",
                     scale_by_sigma=sde == "vesde", ema_rate=0.999, num_res_blocks=1)
  model.nf = 16
  model.ch_mult = (1, 2)
  model.attn_resolutions = ()                # the middle block's attention (NCSN++ always has it) only
  model.dropout = 0.0
  if sde == "vesde":
    model.sigma_max = 10.0                   # the largest pairwise distance between digits is ~8 on [-1, 1]
    # EDM's preconditioning (Karras et al. 2022, Table 1; models/score.py): with score_sde's VE network
    # (unscaled input, output / sigma) the denoiser's error grows with sigma (rmse 1.1 at sigma = 10 after
    # 2,000 steps) and deterministic samplers end 28% of digits as noise (digits FID 3.4x the floor);
    # preconditioned, DPM-Solver++ at 21 NFE and EDM Heun reach 1.3x (benchmarks/results/digits_samplers.md).
    model.parameterization = "edm"

  config.optim.lr = 2e-3
  config.optim.warmup = 200

  set_small_pc_sampler(config.sampling, sde, num_steps=500)   # --config.sampling.method=pc: 500 PC steps
  # Default sampler: EDM's stochastic Heun (Karras et al. 2022, Alg. 2, S_churn = 40), 18 levels = 35 NFE.
  # Its digits FID equals PC's 500 steps within the seed-to-seed noise at a seventh of the evaluation time
  # (means over 3 seeds, x the floor: VP step 2000 1.40 vs 1.45, time_to_default_step2000_samplers.md;
  # sub-VP and VE step 1500 1.25 vs 1.34 and 1.46 vs 2.02 (VE's PC: 1001 NFE), time_to_default_other_sdes.md).
  config.sampling.method = "edm_heun"
  config.sampling.edm_heun.s_churn = 40.0

  evaluate = config.eval
  evaluate.begin_ckpt = 1                    # the final snapshot (step 1200)
  evaluate.end_ckpt = 1
  evaluate.batch_size = 500
  evaluate.num_samples = 500
  evaluate.enable_bpd = False                # opt in: --config.eval.enable_bpd=True (minutes on CPU)
  return config


def get_digits_classifier_config(sde: str):
  """A noise-conditional digits classifier for classifier guidance under ``sde``: the digits data, SDE and
  noise labels of ``get_digits_config(sde)``, a small ``models.NoiseConditionalClassifier`` (~70k parameters)
  trained with the cross-entropy of perturbed digits (training.task = "classifier").

      python main.py --config configs/vp/digits_classifier.py --workdir runs/digits_vp_classifier --mode train
      python main.py --config configs/vp/digits.py --workdir runs/digits_vp --mode sample \\
        --config.sampling.condition=class --config.sampling.classifier_config=configs/vp/digits_classifier.py \\
        --config.sampling.classifier_workdir=runs/digits_vp_classifier
  """
  config = get_digits_config(sde)
  score_model = config.model
  config.training.task = "classifier"
  config.training.snapshot_sampling = False
  config.model = model = ml_collections.ConfigDict()
  model.name = "classifier"
  for field in ("sigma_min", "sigma_max", "beta_min", "beta_max", "num_scales", "ema_rate", "embedding_type",
                "fourier_scale", "nonlinearity"):
    model[field] = score_model[field]       # the score model's SDE and noise-label embedding
  model.num_classes = 10
  model.nf = 32
  model.ch_mult = (1, 2)
  model.num_res_blocks = 2
  model.dropout = 0.0
  config.eval.enable_sampling = False       # --mode eval reports the test accuracy at several noise levels
  return config
