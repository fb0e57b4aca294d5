"""Thresholding of the data prediction on the digits default: every fast method with none / static / dynamic.

Each row is ``main.py --mode eval`` of one snapshot of a VP digits run (configs/vp/digits.py) with
``--config.sampling.*`` overrides: 500 samples, digits FID against the test split and its train-vs-test floor
(benchmarks/results/digits.md), and from the saved samples the largest |x|, the number of images with a pixel
beyond the largest |x| PC reaches (the reference row: the config's PC sampler, 500 steps) and beyond +-1.5.
The fast methods run at their config NFE: EDM Heun 18 levels (35 NFE; stochastic S_churn = 40 as the config,
and deterministic), DPM-Solver++(2M) and UniPC-bh2 20 steps (21 NFE). Thresholding (Saharia et al. 2022 sec.
2.3; Lu et al. 2022b sec. 5): "static" clips x0 = D(x, t) to the data range [-1, 1], "dynamic" maps it by the
per-sample 0.995 quantile of |x0|.

    python -m benchmarks.samplers.thresholding_digits [--workdir DIR] [--seeds 42]

The workdir needs the run's checkpoints (``main.py --config configs/vp/digits.py --workdir DIR --mode train``,
~2 min); the default, runs/bench_time_to_default/vp, is the digits default ``python -m
benchmarks.pipeline.time_to_default`` trains. --ckpt picks the snapshot (eval.begin_ckpt = end_ckpt). An eval
folder whose progress.json exists is reused (column reused). The digits classifier cache of the first eval folder is copied into the others (the
same arrays: it is trained with a fixed seed).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.common import ROOT, eval_snapshot, merge_rows, write

CONFIG = "configs/vp/digits.py"
# label -> config.sampling overrides (the method's config NFE).
METHODS = {
    "pc (config, 500 steps)": {"method": "pc"},
    "edm_heun S_churn=40 (config default)": {"method": "edm_heun"},
    "edm_heun deterministic": {"method": "edm_heun", "edm_heun.s_churn": 0.0},
    "dpm_solver_pp N=20": {"method": "dpm_solver_pp"},
    "unipc N=20": {"method": "unipc"},
}
THRESHOLDINGS = ("none", "static", "dynamic")
FAR = 1.5                                        # the bound: pixels beyond +-1.5


def eval_folder(label: str, thresholding: str, seed: int) -> str:
  name = label.split(" (")[0].replace(" ", "_").replace("=", "")
  return f"thr_{name}_{thresholding}_seed{seed}"


def evaluate(workdir: str, label: str, overrides: dict, thresholding: str, seed: int, ckpt: int) -> dict:
  folder = os.path.join(workdir, eval_folder(label, thresholding, seed))
  flags = [f"--config.sampling.{k}={v}" for k, v in overrides.items()]
  if overrides["method"] != "pc":
    flags.append(f"--config.sampling.{overrides['method']}.thresholding={thresholding}")
  m, seconds, reused = eval_snapshot(CONFIG, workdir, folder, ckpt, seed, flags)
  x = np.load(os.path.join(folder, f"samples_step_{m['step']}.npz"))["samples"]
  per_image = np.abs(x.reshape(x.shape[0], -1)).max(axis=1)
  return dict(model=f"{os.path.basename(os.path.normpath(workdir))} step {m['step']}", sampler=label, thresholding=thresholding if overrides["method"] != "pc" else "-", seed=seed,
              step=m["step"], nfe=m["nfe"], digits_fid=m["digits_fid"],
              fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"], max_abs=float(per_image.max()),
              per_image=per_image, eval_s=seconds, reused=reused)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "bench_time_to_default", "vp"))
  parser.add_argument("--seeds", nargs="*", type=int, default=[42])
  parser.add_argument("--ckpt", type=int, default=1, help="the final snapshot (eval.begin_ckpt = end_ckpt)")
  args = parser.parse_args()
  rows = []
  for seed in args.seeds:
    pc = evaluate(args.workdir, "pc (config, 500 steps)", METHODS["pc (config, 500 steps)"], "none", seed, args.ckpt)
    reach = pc["max_abs"]
    rows.append(pc)
    for label, overrides in METHODS.items():
      if overrides["method"] == "pc":
        continue
      for thresholding in THRESHOLDINGS:
        rows.append(evaluate(args.workdir, label, overrides, thresholding, seed, args.ckpt))
    for r in rows:
      if r["seed"] == seed:
        r["pc_reach"] = reach
    none = {r["sampler"]: r["fid_over_floor"] for r in rows if r["seed"] == seed and r["thresholding"] == "none"}
    for r in rows:
      if r["seed"] == seed:
        r["images_beyond_pc_reach"] = int((r["per_image"] > reach).sum())
        r[f"images_beyond_{FAR}"] = int((r["per_image"] > FAR).sum())
        r["fid_minus_none"] = r["fid_over_floor"] - none[r["sampler"]] if r["sampler"] in none else ""
        print({k: v for k, v in r.items() if k != "per_image"}, flush=True)
  for r in rows:
    r.pop("per_image")
  rows = merge_rows("thresholding_digits", rows, "model", {r["model"] for r in rows})   # other runs' rows kept
  columns = ["model", "sampler", "thresholding", "seed", "nfe", "digits_fid", "fid_over_floor", "fid_minus_none", "max_abs",
             "pc_reach", "images_beyond_pc_reach", f"images_beyond_{FAR}", "eval_s", "reused", "step"]
  notes = ("`python -m benchmarks.samplers.thresholding_digits --workdir runs/<model> [--ckpt 1]`: "
           + __doc__.split("\n\n")[1].replace("\n", " ")
           + " fid_over_floor: digits FID / its floor; fid_minus_none: the change from the same sampler without "
           "thresholding on the same seed (same prior draws). pc_reach: PC's largest |x| on that seed. Target: "
           "inside pc_reach (images_beyond_pc_reach = 0), FID no worse. eval_s: wall seconds of the eval process "
           "(start and compilation included; 2 cores shared with other jobs). Models: thr_vp step 2000 is the VP digits "
           "run of runs/bench_digits_inverse (the former 2,000-step default; its checkpoints copied); thr_vp1200 the "
           "default of f0b8c07 (`python main.py --config configs/vp/digits.py --workdir runs/thr_vp1200 --mode "
           "train`); vp the batch-96 default, trained by `python -m benchmarks.pipeline.time_to_default`.")
  print(write("thresholding_digits", "Thresholding the data prediction: digits VP, every fast method", rows,
              columns, notes))


if __name__ == "__main__":
  main()
