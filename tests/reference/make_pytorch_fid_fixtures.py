"""Writes tests/reference/data/pytorch_fid_inception.npz: pytorch-fid's own FID Inception with seeded
weights, run on fixed images, for tests/test_inception.py. Needs torch, torchvision and pytorch-fid;
run it beside the project, never inside it:

    python3 -m venv /tmp/fidvenv
    /tmp/fidvenv/bin/pip install torchvision==0.29.1 pytorch-fid numpy    # torch 2.14.1, pytorch-fid 0.3.0 used
    /tmp/fidvenv/bin/python tests/reference/make_pytorch_fid_fixtures.py

Nothing of pytorch-fid is patched. Its ``fid_inception_v3`` builds torchvision's Inception3 with the
FID blocks and then loads the published weights through ``load_state_dict_from_url``; the script
replaces that one download by the seeded state dict (testkit/seeded.py, seed 0: every
convolution N(0, 1/fan_in), batch-norm scales 1 + 0.1 N, biases 0.1 N, running means 0.1 N, running
variances 1 + 0.1 |N|). The manifest (names, shapes) comes from a first build whose load is skipped.
The network is pytorch-fid's ``InceptionV3([3], resize_input=True, normalize_input=True)`` (the pool3
block FID uses: bilinear resize to 299, [0, 1] -> [-1, 1]) on two 32x32 RGB images uniform on [0, 1].
The fixture holds names, shapes (JSON), seed, x (NHWC) and pool [2, 2048].
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "pytorch_fid_inception.npz")
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from testkit.seeded import seeded_state  # noqa: E402  (numpy only)

sys.path.remove(ROOT)

SEED = 0


def main():
  import torch
  import pytorch_fid.inception as pi

  torch.set_num_threads(2)
  load = torch.nn.Module.load_state_dict
  pi.load_state_dict_from_url = lambda *args, **kwargs: None
  torch.nn.Module.load_state_dict = lambda self, *args, **kwargs: None       # first build: no weights
  try:
    state = pi.fid_inception_v3().state_dict()
  finally:
    torch.nn.Module.load_state_dict = load
  manifest = [(k, list(v.shape)) for k, v in state.items()]
  seeded = {**state, **{k: torch.from_numpy(v) for k, v in seeded_state(manifest, SEED).items()}}
  pi.load_state_dict_from_url = lambda *args, **kwargs: seeded                # the "download"
  net = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True,
                       use_fid_inception=True).eval()
  x = np.random.default_rng(1234).uniform(0.0, 1.0, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    pool = net(torch.from_numpy(x).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
  np.savez_compressed(OUT, names=np.array([k for k, _ in manifest]), shapes=json.dumps([s for _, s in manifest]),
                      seed=np.int64(SEED), x=x, pool=pool)
  print(f"{OUT}: {len(manifest)} tensors, pool |max| {np.abs(pool).max():.4g}, mean {pool.mean():.4g}")


if __name__ == "__main__":
  main()
