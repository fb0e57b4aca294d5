"""The adaptive-step reverse-SDE sampler on the digits default against the config's PC sampler.

Each row is ``main.py --mode eval`` of one snapshot of a VP digits run (configs/vp/digits.py) with
``--config.sampling.*`` overrides: 500 samples, digits FID against the test split over its train-vs-test floor
(benchmarks/results/digits.md). The reference row is the config's PC sampler (Euler-Maruyama + Langevin, 500
steps, 501 NFE); the others are ``method="sde_adaptive"`` (Jolicoeur-Martineau et al. 2021, Alg. 1; samplers/
adaptive.py) at several rtol with the paper's atol, per-sample steps (Alg. 1) unless the row says control=batch
(one step for the batch, from the error over all of it). Target (issue 26): PC's FID at no more than half its NFE.
The nfe column is what the sampler reports: 2 x the attempted steps of the slowest sample (control=batch: of
every sample) + the denoising step.

    python -m benchmarks.samplers.sde_adaptive_digits [--workdir DIR] [--seeds 42 43] [--ckpt 2]
        [--controls sample batch]

The workdir needs the run's checkpoints (``main.py --config configs/vp/digits.py --workdir DIR --mode train``);
the default, runs/bench_time_to_default/vp, is the digits default ``python -m benchmarks.pipeline.time_to_default``
trains.
An eval folder whose progress.json exists is reused (column reused); the digits classifier cache of one eval
folder is copied into the others (the same arrays: it is trained with a fixed seed).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.common import RESULTS, ROOT, eval_snapshot, merge_rows, write
from samplers.adaptive import CONTROLS

CONFIG = "configs/vp/digits.py"
RTOLS = (0.01, 0.02, 0.05, 0.1)


def evaluate(workdir: str, label: str, overrides: dict, seed: int, ckpt: int) -> dict:
  folder = os.path.join(workdir, f"adaptive_{label.replace(' ', '_').replace('=', '')}_seed{seed}")
  m, seconds, reused = eval_snapshot(CONFIG, workdir, folder, ckpt, seed,
                                     [f"--config.sampling.{k}={v}" for k, v in overrides.items()])
  return dict(model=f"{os.path.basename(os.path.normpath(workdir))} step {m['step']}", sampler=label, seed=seed,
              nfe=m["nfe"], digits_fid=m["digits_fid"],
              fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"], eval_s=seconds, reused=reused)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "bench_time_to_default", "vp"))
  parser.add_argument("--seeds", nargs="*", type=int, default=[42])
  parser.add_argument("--ckpt", type=int, default=1, help="the final snapshot (eval.begin_ckpt = end_ckpt)")
  parser.add_argument("--rtols", nargs="*", type=float, default=list(RTOLS))
  parser.add_argument("--controls", nargs="*", default=["sample"], choices=CONTROLS,
                      help="step control (sampling.sde_adaptive.control): per sample (Alg. 1) or per batch")
  args = parser.parse_args()
  rows = []
  for seed in args.seeds:
    pc = evaluate(args.workdir, "pc (config, 500 steps)", {"method": "pc"}, seed, args.ckpt)
    rows.append(pc)
    for control, rtol in [(c, r) for c in args.controls for r in args.rtols]:
      label = f"sde_adaptive rtol={rtol:g}" + ("" if control == "sample" else f" control={control}")
      row = evaluate(args.workdir, label, {"method": "sde_adaptive", "sde_adaptive.rtol": rtol,
                                           "sde_adaptive.control": control}, seed, args.ckpt)
      row["nfe_over_pc"] = row["nfe"] / pc["nfe"]
      row["fid_minus_pc"] = row["fid_over_floor"] - pc["fid_over_floor"]
      row["meets_target"] = bool(row["nfe"] <= pc["nfe"] / 2 and row["fid_minus_pc"] <= 0)
      rows.append(row)
      print(row, flush=True)
  rows = merge_rows("sde_adaptive_digits", rows, "model", {r["model"] for r in rows})   # other models' rows kept
  columns = ["model", "sampler", "seed", "nfe", "nfe_over_pc", "digits_fid", "fid_over_floor", "fid_minus_pc",
             "meets_target", "eval_s", "reused"]
  notes = ("`python -m benchmarks.samplers.sde_adaptive_digits --workdir runs/<model>`: "
           + __doc__.split("\n\n")[1].replace("\n", " ")
           + " fid_minus_pc: fid_over_floor minus the PC row's on the same seed; meets_target: nfe <= PC's / 2 and "
           "fid_minus_pc <= 0. eval_s: wall seconds of the eval process (start and compilation included; 2 cores "
           "shared with other jobs). thr_vp1200 was the default of f0b8c07 (`python main.py --config "
           "configs/vp/digits.py --workdir runs/thr_vp1200 --mode train`); vp is the default of this row's commit, "
           "trained by `python -m benchmarks.pipeline.time_to_default` (batch 96).")
  text = write("sde_adaptive_digits", "Adaptive reverse SDE against PC on the digits default", rows, columns, notes)
  over_seeds = summary(rows)
  with open(os.path.join(RESULTS, "sde_adaptive_digits.md"), "a") as f:
    f.write(over_seeds)
  print(text + over_seeds)


def summary(rows: list[dict]) -> str:
  """Per model and sampler over its seeds: mean and sd of fid_over_floor, and the paired difference from PC on
  the same seeds (mean, its standard error sd / sqrt(seeds), seeds where the sampler is better)."""
  lines = ["", "## Over seeds (mean; sd across seeds; paired difference from PC on the same seeds)", "",
           "| model | sampler | seeds | nfe | fid_over_floor | sd | fid_minus_pc | se | better_on |",
           "|---|---|---|---|---|---|---|---|---|"]
  for model, sampler in dict.fromkeys((r["model"], r["sampler"]) for r in rows):
    group = [r for r in rows if (r["model"], r["sampler"]) == (model, sampler)]
    fid = np.array([r["fid_over_floor"] for r in group])
    diff = np.array([r["fid_minus_pc"] for r in group if r.get("fid_minus_pc") is not None])
    nfe = [r["nfe"] for r in group]
    paired = (f"{diff.mean():+.3f} | {diff.std(ddof=1) / np.sqrt(len(diff)):.3f} | {int((diff < 0).sum())}/{len(diff)}"
              if len(diff) > 1 else " | | ")
    lines.append(f"| {model} | {sampler} | {len(group)} | {min(nfe)}-{max(nfe)} | {fid.mean():.3f} | "
                 f"{fid.std(ddof=1) if len(fid) > 1 else float('nan'):.3f} | {paired} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
