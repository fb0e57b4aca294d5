"""The toy configs end to end: an MLP trained on the oracle's 2-D mixture under VE, VP and sub-VP.

For each SDE: ``--mode train`` then ``--mode eval`` on configs/toy/<sde>.py as subprocesses, timed.
The final checkpoint's 4,096 samples are scored against the exact mixture (mode-weight TV, worst mode
mean and spread errors in mode standard deviations), each beside the 99th percentile of the same
metric over 200 exact samples of the same size; and the model's test NLL (probability-flow ODE,
1,024 test points) beside the exact NLL of the same points. The scatter plots are copied to
docs/toy_<sde>_samples.png.

    python -m benchmarks.pipeline.toy [--sdes ve vp subvp]
"""

from __future__ import annotations

import os
import shutil

from benchmarks.common import ROOT, final_metrics, run_main as run, run_per_sde, write

SDES = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}


def bench(sde: str, root: str) -> dict:
  workdir = os.path.join(root, sde)
  shutil.rmtree(workdir, ignore_errors=True)
  config = f"configs/toy/{sde}.py"
  train_s = run([f"--config={config}", f"--workdir={workdir}", "--mode=train"])
  eval_s = run([f"--config={config}", f"--workdir={workdir}", "--mode=eval"])
  m = final_metrics(os.path.join(workdir, "eval", "progress.json"))
  picture = os.path.join(ROOT, "docs", f"toy_{sde}_samples.png")
  shutil.copyfile(m["samples_png"], picture)
  row = dict(sde=SDES[sde], steps=m["step"], train_s=train_s, eval_s=eval_s, nfe=m["nfe"])
  for name in ("tv", "mean_err", "std_err"):
    row[name] = m[f"mode_{name}"]
    row[f"{name}_floor"] = m[f"mode_{name}_floor_p99"]
    row[f"{name}_ratio"] = m[f"mode_{name}"] / m[f"mode_{name}_floor_p99"]
  row.update(nll_test=m["nll_test"], nll_exact=m["nll_test_exact"], nll_gap=m["nll_test"] - m["nll_test_exact"])
  return row


def main():
  rows = run_per_sde(__doc__, SDES, bench, "bench_toy")
  notes = ("`python -m benchmarks.pipeline.toy`: per SDE, `main.py --mode train` then `--mode eval` on "
           "configs/toy/<sde>.py (MLP 256x3, batch 512, 10,000 steps; PC sampler with 500 steps; NLL by the "
           "probability-flow ODE at rtol = atol = 1e-5 on 1,024 test points, nats per dimension). Seconds are wall "
           "clock with process start and compilation. *_floor: 99th percentile of the metric over 200 exact samples "
           "of the same size (4,096); *_ratio = metric / floor (1 or less: indistinguishable from exact sampling at "
           "this size). nll_gap = model NLL - exact NLL, an estimate of KL(data || model) per dimension.")
  print(write("toy", "Toy configs: a 2-D Gaussian mixture learned by an MLP", rows,
              ["sde", "steps", "train_s", "eval_s", "nfe", "tv", "tv_floor", "tv_ratio", "mean_err", "mean_err_floor",
               "mean_err_ratio", "std_err", "std_err_floor", "std_err_ratio", "nll_test", "nll_exact", "nll_gap"],
              notes))


if __name__ == "__main__":
  main()
