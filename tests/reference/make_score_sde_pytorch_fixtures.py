"""Writes the score_sde_pytorch equivalence fixtures of tests/test_published.py (and the reference's
parameter counts of tests/test_models.py). Needs torch; run it beside the project, never inside it:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch   # 2.13.0+cpu used
    /tmp/torchvenv/bin/pip install numpy ml_collections scipy
    git -C <mirror of yang-song/score_sde_pytorch> archive HEAD | tar -x -C /tmp/ref_pt
    /tmp/torchvenv/bin/python tests/reference/make_score_sde_pytorch_fixtures.py --ref /tmp/ref_pt

Patches applied to the exported reference (nothing else changes; the script checks them):
  * op/upfirdn2d.py and op/fused_act.py build CUDA extensions at import (torch.utils.cpp_extension.load);
    the script replaces those two ``load(...)`` calls by ``None``. On CPU the reference's own
    ``upfirdn2d`` takes its pure-torch ``upfirdn2d_native`` path, so the FIR layers are the reference's.
  * layerspp.Upsample without FIR calls ``F.interpolate(x, (H * 2, W * 2), 'nearest')``, where
    'nearest' lands on the positional scale_factor and torch refuses it; the script passes
    ``mode='nearest'``, the evident meaning (score_sde's flax code: nearest-neighbour resize). No
    published PyTorch model reaches that line (they all use FIR).
  * Not patched, a limit: the port's FIR up-sampling convolution (up_or_down_sampling.upsample_conv_2d,
    on progressive="residual"'s up path and in DDPM-style blocks with resamp_with_conv when fir=True)
    does not run on torch (negative slice steps, then a 4-element conv_transpose2d stride), so no
    published PyTorch model uses it either. The reduced configs take progressive="residual" without
    FIR and DDPM-style blocks with FIR resampling but no convolution; FIR's down-sampling convolution
    (conv_downsample_2d) is covered through progressive_input="residual".
  * The reference's top-level utils.py imports tensorflow for ``restore_checkpoint``; the script does
    not import it and writes checkpoints with the same dict as its ``save_checkpoint``
    ({'optimizer', 'model', 'ema', 'step'}, torch.save).

For every configuration: the reference model is built by ``models.utils.create_model`` (so state-dict
keys carry DataParallel's ``module.``), filled with ``testkit/seeded.py`` weights (seed 0;
``sigmas`` kept), and its score is taken through the reference's ``models.utils.get_score_fn`` with its
own SDE (sde_lib.VESDE / VPSDE / subVPSDE built as run_lib.py builds them) at batch 2, on inputs
x = mean(x0, t) + std(t) z, x0 uniform on the data range (what the network sees in training), t uniform
on (1e-3, 1). Fixture pytorch_<name>.npz holds: config (JSON of the model / data / training sections),
names and shapes (the state dict's manifest), seed, x (NHWC), t, score (NHWC) and, for the reduced
configs, score_ema (EMA shadow weights drawn with seed 1) beside pytorch_<name>.pth, a real
score_sde_pytorch checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from testkit.score_sde_pytorch import patch_reference  # noqa: E402  (standard library only)
from testkit.seeded import seeded_state, seeded_tensor  # noqa: E402  (numpy only)

sys.path.remove(ROOT)     # the reference's configs/ and models/ (namespace packages) must not meet ours

SEED, EMA_SEED, BATCH, T_MIN = 0, 1, 2, 1e-3

# fixture name -> reference config module
FULL = {
    "ve_cifar10_ncsnpp_continuous": "configs.ve.cifar10_ncsnpp_continuous",
    "ve_cifar10_ncsnpp_deep_continuous": "configs.ve.cifar10_ncsnpp_deep_continuous",
    "ve_cifar10_ncsnpp": "configs.ve.cifar10_ncsnpp",
    "vp_cifar10_ddpmpp_continuous": "configs.vp.cifar10_ddpmpp_continuous",
    "vp_cifar10_ddpmpp_deep_continuous": "configs.vp.cifar10_ddpmpp_deep_continuous",
    "vp_cifar10_ddpmpp": "configs.vp.cifar10_ddpmpp",
    "vp_ddpm_cifar10": "configs.vp.ddpm.cifar10",
    "vp_ddpm_cifar10_continuous": "configs.vp.ddpm.cifar10_continuous",
    "subvp_cifar10_ddpm_continuous": "configs.subvp.cifar10_ddpm_continuous",
    "subvp_cifar10_ddpmpp_continuous": "configs.subvp.cifar10_ddpmpp_continuous",
    "subvp_cifar10_ddpmpp_deep_continuous": "configs.subvp.cifar10_ddpmpp_deep_continuous",
}
SMALL = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,))
# One reduced configuration per block type / path: (reference config, model overrides), 16x16 images.
REDUCED = {
    "r_ncsnpp_outputskip_inputskip_cat": ("configs.ve.cifar10_ncsnpp_continuous",
                                          dict(progressive="output_skip", progressive_input="input_skip",
                                               progressive_combine="cat")),
    "r_ncsnpp_residual": ("configs.ve.cifar10_ncsnpp_continuous",
                          dict(progressive="residual", progressive_input="residual", fir=False)),
    "r_ddpmpp_ddpmblock": ("configs.vp.cifar10_ddpmpp_continuous", dict(resblock_type="ddpm")),
    "r_ncsnpp_ddpmblock_fir": ("configs.ve.cifar10_ncsnpp_continuous",
                               dict(resblock_type="ddpm", fir=True, resamp_with_conv=False,
                                    progressive_input="residual")),
    "r_ncsnpp_ve_discrete": ("configs.ve.cifar10_ncsnpp", {}),
    "r_ddpm": ("configs.vp.ddpm.cifar10", dict(nf=32, ch_mult=(1, 1))),    # DDPM's GroupNorm has 32 groups
}
NO_PTH = ("r_ddpm",)     # its .pth would be 1 MB; the state-dict manifest alone covers the architecture
# Parameter counts of the published configurations (torch: sum of numel over model.parameters()).
COUNTS = {
    "configs.ve.bedroom": "configs.ve.bedroom_ncsnpp_continuous",
    "configs.ve.church": "configs.ve.church_ncsnpp_continuous",
    "configs.ve.ffhq_256": "configs.ve.ffhq_256_ncsnpp_continuous",
    "configs.ve.celebahq_256": "configs.ve.celebahq_256_ncsnpp_continuous",
    "configs.ve.ffhq_1024": "configs.ve.ffhq_ncsnpp_continuous",
    "configs.vp.cifar10_discrete": "configs.vp.cifar10_ddpmpp",
    "configs.vp.cifar10_ddpm": "configs.vp.ddpm.cifar10",
}


def reference_config(module: str, overrides: dict | None = None, small: bool = False):
  import torch

  config = importlib.import_module(module).get_config()
  config.device = torch.device("cpu")
  if small:
    config.data.image_size = 16
    config.model.update(SMALL)
  config.model.update(overrides or {})
  return config


def reference_sde(config):
  """As run_lib.py builds it."""
  import sde_lib

  name = config.training.sde.lower()
  m = config.model
  if name == "vesde":
    return sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
  if name == "vpsde":
    return sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
  return sde_lib.subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


def inputs(config, sde):
  """x [B, C, H, W] (torch) and t [B]: perturbed data from the reference SDE's marginal."""
  import torch

  rng = np.random.default_rng(1234)
  shape = (BATCH, config.data.num_channels, config.data.image_size, config.data.image_size)
  x0 = rng.uniform(-1.0 if config.data.centered else 0.0, 1.0, shape).astype(np.float32)
  t = rng.uniform(T_MIN, 1.0, BATCH).astype(np.float32)
  z = rng.standard_normal(shape).astype(np.float32)
  mean, std = sde.marginal_prob(torch.from_numpy(x0), torch.from_numpy(t))
  return mean + std[:, None, None, None] * torch.from_numpy(z), torch.from_numpy(t)


def score(config, sde, model, x, t):
  import torch
  from models import utils as mutils

  with torch.no_grad():
    out = mutils.get_score_fn(sde, model, train=False, continuous=config.training.continuous)(x, t)
  return out.permute(0, 2, 3, 1).numpy()


def section(config, name):
  return json.loads(json.dumps(config[name].to_dict(), default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def make(name: str, config, with_pth: bool) -> None:
  import torch
  from models import utils as mutils
  from models.ema import ExponentialMovingAverage

  torch.manual_seed(0)
  model = mutils.create_model(config)
  state = model.state_dict()
  manifest = [(k, list(v.shape)) for k, v in state.items()]
  seeded = {k: torch.from_numpy(v) for k, v in seeded_state(manifest, SEED).items()}
  model.load_state_dict({**state, **seeded})
  sde = reference_sde(config)
  x, t = inputs(config, sde)
  out = dict(config=json.dumps({k: section(config, k) for k in ("model", "data", "training")}),
             names=np.array([k for k, _ in manifest]), shapes=json.dumps([s for _, s in manifest]),
             seed=np.int64(SEED), x=x.permute(0, 2, 3, 1).numpy(), t=t.numpy(), score=score(config, sde, model, x, t))
  if with_pth:
    # An EMA whose shadow weights differ from the raw ones, saved as the reference's save_checkpoint does.
    ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    ema.shadow_params = [torch.from_numpy(seeded_tensor(k, tuple(p.shape), EMA_SEED)) for k, p in named]
    ema.num_updates = 7
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, betas=(config.optim.beta1, 0.999),
                                 eps=config.optim.eps, weight_decay=config.optim.weight_decay)
    torch.save({"optimizer": optimizer.state_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                "step": 7}, os.path.join(OUT, f"pytorch_{name}.pth"))
    ema.copy_to(model.parameters())
    out["score_ema"] = score(config, sde, model, x, t)
  np.savez_compressed(os.path.join(OUT, f"pytorch_{name}.npz"), **out)
  print(name, "params", sum(p.numel() for p in model.parameters()), "max|score|", float(np.abs(out["score"]).max()),
        flush=True)


def counts() -> dict:
  from models import utils as mutils

  result = {}
  for ours, module in COUNTS.items():
    config = reference_config(module)
    model = mutils.get_model(config.model.name)(config)
    result[ours] = int(sum(p.numel() for p in model.parameters()))
    print(ours, module, result[ours], flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="an exported copy of yang-song/score_sde_pytorch")
  parser.add_argument("--only", nargs="*", help="fixture names (default: all)")
  args = parser.parse_args()
  patch_reference(args.ref)
  sys.path[:] = [os.path.abspath(args.ref)] + [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
  import torch
  from models import ddpm, ncsnpp  # noqa: F401  (register the reference's networks)

  torch.set_num_threads(2)
  os.makedirs(OUT, exist_ok=True)
  for name, module in FULL.items():
    if not args.only or name in args.only:
      make(name, reference_config(module), with_pth=False)
  for name, (module, overrides) in REDUCED.items():
    if not args.only or name in args.only:
      make(name, reference_config(module, overrides, small=True), with_pth=name not in NO_PTH)
  if not args.only or "counts" in args.only:
    with open(os.path.join(OUT, "score_sde_pytorch_param_counts.json"), "w") as f:
      json.dump(counts(), f, indent=1)


if __name__ == "__main__":
  main()
