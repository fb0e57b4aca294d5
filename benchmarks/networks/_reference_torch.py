"""Timing worker for benchmarks/networks/networks_vs_reference.py: runs score_sde_pytorch's own networks.

Runs under a Python that has torch (a side virtual environment, never this project's), on an exported
copy of yang-song/score_sde_pytorch (patched for CPU by testkit/score_sde_pytorch.py's ``patch_reference``,
as the fixture generator patches it: its CUDA extension builds become ``None`` and the reference's
pure-torch ``upfirdn2d_native`` runs the FIR layers). It reads one JSON command per line on stdin and
answers one JSON line on stdout, so the parent can alternate its own runs with these in one process tree:

    {"op": "setup", "config": "configs.ve.cifar10_ncsnpp_continuous", "batch": 8, "threads": 2}
        -> {"params": int}
    {"op": "time", "mode": "fwd" | "fwd_bwd", "repeats": int}
        -> {"seconds": [float, ...]}   (one per run, after a warm-up run on the first call of a mode)
    {"op": "quit"}

fwd runs the network under ``torch.no_grad()`` in eval mode; fwd_bwd computes the mean squared output
in train mode (dropout on) and its gradient w.r.t. every parameter (``backward``), as ours does.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time


def main():
  ref = sys.argv[1]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.path.insert(0, root)
  from testkit.score_sde_pytorch import patch_reference   # standard library only
  # the reference's configs/ and models/ (namespace packages: no __init__.py) must not meet ours, which as
  # regular packages would win wherever they are on the path (e.g. PYTHONPATH=. set by the caller)
  sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
  patch_reference(ref)
  sys.path.insert(0, ref)

  import torch
  from models import utils as mutils   # the reference's (registers ncsnpp / ddpm models on import below)
  from models import ddpm, ncsnpp, ncsnv2  # noqa: F401

  model = x = labels = None
  warm = set()
  for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "quit":
      break
    if cmd["op"] == "setup":
      torch.set_num_threads(int(cmd["threads"]))
      torch.manual_seed(0)
      config = importlib.import_module(cmd["config"]).get_config()
      config.device = torch.device("cpu")
      model = mutils.get_model(config.model.name)(config)
      batch = int(cmd["batch"])
      size, channels = config.data.image_size, config.data.num_channels
      x = torch.rand(batch, channels, size, size) * 2 - 1
      labels = torch.rand(batch) * 0.999 + 1e-3
      warm = set()
      answer = {"params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
                "threads": torch.get_num_threads()}
    elif cmd["op"] == "time":
      mode = cmd["mode"]

      def run():
        if mode == "fwd":
          model.eval()
          with torch.no_grad():
            model(x, labels)
        else:
          model.train()
          model.zero_grad(set_to_none=True)
          model(x, labels).square().mean().backward()

      if mode not in warm:
        run()
        warm.add(mode)
      seconds = []
      for _ in range(int(cmd["repeats"])):
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
      answer = {"seconds": seconds}
    else:
      raise ValueError(f"unknown op {cmd['op']!r}")
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
  main()
