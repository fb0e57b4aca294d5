"""Do model-fitted time grids transfer to digits? Fast samplers at exactly 10 and 20 NFE on the digits default.

Issue 26 item 1: a grid fitted without the evaluation data, from the trained model itself and its training
data (Align-Your-Steps style, Sabour et al. 2024). For each fast method (--methods: UniPC-bh2 order 2 by
default; DPM-Solver++(2M) and EDM Heun, deterministic, also fit) and budget,
``samplers.fit_grid.fit_grid_from_model`` fits the noise levels from the EMA score of the final snapshot of a
VP digits run (configs/vp/digits.py) and the digits TRAINING split only (all training images in [-1, 1]; the
test split, which the FID is measured against, is never read), on --batch prior draws (key 12) against a
--ref-steps log-SNR DPM-Solver++(2M) reference, --iters Adam steps, with the sampler's own t_min and sigma_floor
(smaller than fit_grid's defaults 512 / 500 / 150: a fit must take minutes on 2 shared CPU cores). The grids are
saved with ``save_grid`` under ``<workdir>/grid_transfer_digits/`` (not in the repository).

Each row is ``main.py --mode eval`` of that snapshot (``benchmarks.common.eval_snapshot``) with
``--config.sampling.method=<m> --config.sampling.nfe=<nfe> --config.sampling.<m>.grid=<grid>`` for grid in
``logsnr``, ``edm`` (rho = 7) and ``fitted:<abs path>`` (the model-fitted grid), everything else the
config's (static thresholding to [-1, 1] included, which the fit does not see), over sampling seeds
``--config.seed`` 0..4: 500 samples, digits FID against the test split over its train-vs-test floor. The
reference row is the config's own sampler (EDM's stochastic Heun, S_churn = 40, 35 NFE) on the same seeds; a
``converged`` row (--converged: DPM-Solver++(2M) on log-SNR at 100 NFE) shows the probability-flow ODE's own FID,
the solution the fit moves the grid towards.

    python -m benchmarks.pipeline.time_to_default       # trains the default into the default --workdir
    python -m benchmarks.samplers.grid_transfer_digits [--workdir DIR] [--ckpt 1] [--seeds 0 1 2 3 4]
        [--methods unipc] [--nfes 10 20] [--grids logsnr edm model] [--batch 64] [--iters 40]

A 500-sample digits FID moves by ~0.2x the floor between sampling seeds: compare the means over seeds (sd
given). A seed fixes the evaluation key of every sampler, and the FIDs of two grids on the same seed move
together, so grids are compared paired by seed (a paired t-test at 95%: ``compare``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

import samplers
from benchmarks.common import ROOT, RESULTS, commit, eval_snapshot, machine, write
from data_lib.images import get_dataset
from samplers import fit_grid
from schema import as_config, load_config_file
from schema.sampling import sampler_options

CONFIG = "configs/vp/digits.py"
# The digits default trained by `python -m benchmarks.pipeline.time_to_default` (its final snapshot, step 1200, is
# checkpoint 1); the committed results were measured on an earlier run of the former network (their command line
# names its workdir).
WORKDIR = os.path.join(ROOT, "runs", "bench_time_to_default", "vp")
GRIDS = ("logsnr", "edm", "model")
SAME = 1e-4           # |paired difference| in fid_over_floor below which two grids gave the same samples


def training_images(config) -> np.ndarray:
  """The whole training split in model space: float32 [n, H, W, C] (one pass of the epoch-0 permutation)."""
  data = get_dataset(config.data, "train", evaluation=False, seed=0)
  return data.batch(0, len(data))


def sampler_range(config, method: str) -> tuple[float, float]:
  """(t_min, sigma_floor) the configured ``method`` samples with, as main.py types them
  (``schema.sampling.sampler_options`` of the config with ``sampling.method = method``)."""
  config = config.copy_and_resolve_references()
  config.sampling.method = method
  _, options = sampler_options(as_config(config))
  return float(options.t_min), float(options.sigma_floor)


def fit_grids(args) -> list[dict]:
  """Fits and saves one grid per (method, nfe) unless its file exists; the fit records."""
  from training.train import evaluation_state, setup

  folder = os.path.join(args.workdir, "grid_transfer_digits")
  os.makedirs(folder, exist_ok=True)
  config = load_config_file(os.path.join(ROOT, args.config))   # as main.py's --config reads it
  run = setup(config)
  params = evaluation_state(run, args.workdir, args.step).ema_params
  score_fn = run.score_fn(params)
  data = training_images(config)
  fits = []
  for method in args.methods:
    t_min, sigma_floor = sampler_range(config, method)
    for nfe in args.nfes:
      path = os.path.join(folder, f"{method}_nfe{nfe}.json")
      if os.path.exists(path):
        with open(path) as f:
          fits.append(dict(json.load(f), path=path, reused=True))
        continue
      t0 = time.perf_counter()
      sigmas, info = fit_grid.fit_grid_from_model(jax.random.key(12), run.sde, score_fn, data, nfe, method=method,
                                                  t_min=t_min, sigma_floor=sigma_floor, batch=args.batch,
                                                  iters=args.iters, ref_steps=args.ref_steps)
      seconds = round(time.perf_counter() - t0, 1)
      meta = dict(info, seconds=seconds, workdir=args.workdir, step=args.step, config=args.config,
                  data="digits train split (%d images)" % len(data), sde="vp")
      fit_grid.save_grid(path, {len(sigmas) - 1: sigmas}, **meta)
      fits.append(dict(meta, grids={str(len(sigmas) - 1): sigmas.tolist()}, path=path, reused=False))
      print(f"fit {method} nfe={nfe}: {seconds}s init {info['init']} loss logsnr {info['loss_logsnr']:.4f} "
            f"edm {info['loss_edm']:.4f} fitted {info['loss_fitted']:.4f}", flush=True)
  return fits


def evaluate(args, label: str, overrides: list[str], seed: int) -> dict:
  folder = os.path.join(args.workdir, f"gtd_{label}_seed{seed}")
  m, seconds, reused = eval_snapshot(args.config, args.workdir, folder, args.ckpt, seed, overrides)
  return dict(seed=seed, step=m["step"], nfe=m["nfe"], digits_fid=m["digits_fid"],
              fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"], eval_s=seconds, reused=reused)


def cases(args, fits) -> list[tuple[str, str, int, str, list[str]]]:
  """(label, method, nfe, grid, overrides) of every evaluated sampler, the reference first."""
  out = [("default", "edm_heun (config: S_churn 40, 18 levels)", 35, "edm", [])]
  if args.converged:                                  # the probability-flow ODE solved finely: what the fit aims at
    out.append((f"converged_dpm_solver_pp_nfe{args.converged}", "dpm_solver_pp (converged ODE)", args.converged,
                "logsnr", ["--config.sampling.method=dpm_solver_pp", f"--config.sampling.nfe={args.converged}",
                           "--config.sampling.dpm_solver_pp.grid=logsnr"]))
  paths = {(f["method"], f["nfe"]): f["path"] for f in fits}
  for nfe in args.nfes:
    for method in args.methods:
      for grid in args.grids:
        value = f"fitted:{paths[method, nfe]}" if grid == "model" else grid
        overrides = [f"--config.sampling.method={method}", f"--config.sampling.nfe={nfe}",
                     f"--config.sampling.{method}.grid={value}"]
        if method == "edm_heun":
          overrides.append("--config.sampling.edm_heun.s_churn=0.0")      # the deterministic sampler it was fitted for
        out.append((f"{method}_nfe{nfe}_{grid}", method, nfe, grid, overrides))
  return out


def summarise(label, method, nfe, grid, per_seed: list[dict]) -> dict:
  vals = [r["fid_over_floor"] for r in per_seed]
  secs = [r["eval_s"] for r in per_seed if r["eval_s"] != ""]
  return dict(sampler=label, method=method, grid=grid, nfe_budget=nfe, nfe=per_seed[0]["nfe"], seeds=len(vals),
              fid_over_floor_mean=statistics.mean(vals),
              fid_over_floor_sd=statistics.stdev(vals) if len(vals) > 1 else float("nan"),
              per_seed=" ".join(f"{v:.2f}" for v in vals),
              eval_s_median=statistics.median(secs) if secs else "")


def compare(rows: list[dict]) -> list[dict]:
  """Per (method, nfe): the model grid minus logsnr and minus edm in fid_over_floor, paired by seed (the same
  evaluation key: most of the seed-to-seed swing cancels). Mean and standard error of the paired differences and
  the two-sided paired t-test's 95% verdict (Student's t with seeds - 1 degrees of freedom)."""
  from scipy import stats

  out = []
  by = {(r["method"], r["nfe_budget"], r["grid"]): r for r in rows if r["sampler"] != "default"}
  for (method, nfe, grid), r in by.items():
    if grid != "model":
      continue
    for other in ("logsnr", "edm"):
      o = by.get((method, nfe, other))
      if o is None:
        continue
      d = [a - b for a, b in zip(r["_vals"], o["_vals"])]
      mean = statistics.mean(d)
      se = statistics.stdev(d) / len(d) ** 0.5
      half = float(stats.t.ppf(0.975, len(d) - 1)) * se
      verdict = "within noise" if abs(mean) < half else "model better" if mean < 0 else "model worse"
      if max(abs(v) for v in d) < SAME:
        verdict = "the same samples (float rounding): the fit kept this grid"
      out.append(dict(method=method, nfe=nfe, comparison=f"model - {other}", mean_diff=mean, se_diff=se,
                      ci95=f"[{mean - half:.3f}, {mean + half:.3f}]", verdict=verdict))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=WORKDIR)
  parser.add_argument("--config", default=CONFIG)
  parser.add_argument("--ckpt", type=int, default=1, help="the final snapshot evaluated (eval.begin_ckpt = end_ckpt)")
  parser.add_argument("--step", type=int, default=1200, help="the training step of that snapshot (fitted on)")
  parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
  parser.add_argument("--methods", nargs="*", default=["unipc"], choices=list(fit_grid.FIT_METHODS))
  parser.add_argument("--nfes", nargs="*", type=int, default=[10, 20])
  parser.add_argument("--batch", type=int, default=64, help="prior draws the grid is fitted on")
  parser.add_argument("--iters", type=int, default=40, help="Adam steps of the fit")
  parser.add_argument("--ref-steps", type=int, default=250, help="steps of the fit's reference solve")
  parser.add_argument("--grids", nargs="*", default=list(GRIDS), choices=list(GRIDS),
                      help="model: the grid fitted from the model (fitted first, unless its file exists)")
  parser.add_argument("--converged", type=int, default=100,
                      help="also a DPM-Solver++(2M) log-SNR row at this NFE (the solved ODE; 0: none)")
  parser.add_argument("--fit-only", action="store_true")
  args = parser.parse_args()
  args.workdir = os.path.abspath(args.workdir)
  t0 = time.perf_counter()
  fits = fit_grids(args) if "model" in args.grids else []
  if args.fit_only:
    return
  rows = []
  for label, method, nfe, grid, overrides in cases(args, fits):
    per_seed = []
    for seed in args.seeds:
      per_seed.append(evaluate(args, label, overrides, seed))
      print(label, per_seed[-1], flush=True)
    row = summarise(label, method, nfe, grid, per_seed)
    row["_vals"] = [r["fid_over_floor"] for r in per_seed]
    rows.append(row)
  minutes = (time.perf_counter() - t0) / 60
  diffs = compare(rows)
  ref = rows[0]
  for r in rows:
    r["minus_default"] = r["fid_over_floor_mean"] - ref["fid_over_floor_mean"]
  command = (f"python -m benchmarks.samplers.grid_transfer_digits --workdir {os.path.relpath(args.workdir, ROOT)} "
             f"--ckpt {args.ckpt} --step {args.step} --seeds {' '.join(map(str, args.seeds))} --methods "
             f"{' '.join(args.methods)} --nfes {' '.join(map(str, args.nfes))} --batch {args.batch} "
             f"--iters {args.iters} --ref-steps {args.ref_steps} --converged {args.converged}")
  sd = statistics.median(r["fid_over_floor_sd"] for r in rows)
  fit_desc = "; ".join(f"{f['method']} nfe {f['nfe']} ({f['seconds']:.0f} s): start {f['init']}, objective "
                       f"logsnr {f['loss_logsnr']:.3f} / edm {f['loss_edm']:.3f} / fitted {f['loss_fitted']:.3f}"
                       for f in fits)
  ran = [r for r in rows if r["eval_s_median"] != ""]
  wall = (f"{minutes:.0f} min wall" if ran else "every evaluation reused from earlier runs of the same command "
          "(their eval folders under the workdir)")
  secs = [r["eval_s_median"] for r in ran]
  evals = (f"; one eval {min(secs):.0f}-{max(secs):.0f} s wall (medians per row) on 2 cores, other jobs possibly "
           "sharing them" if secs else "")
  notes = (f"Command: `{command}` ({wall}{evals}). " + __doc__.split("\n\n")[1].replace("\n", " ") + " "
           + __doc__.split("\n\n")[2].replace("\n", " ")
           + f" The model grid saw only the model (EMA parameters of step {args.step}) and the training digits; "
           f"fit objective ({fit_grid.MODEL_OBJECTIVE}; here {args.ref_steps} reference steps) on the fitting batch: "
           f"{fit_desc}. Seed-to-seed sd of "
           f"fid_over_floor: median {sd:.2f} over the rows; the second table gives the paired (same seed) "
           "differences model grid minus logsnr / edm with their standard error and 95% interval over seeds (paired "
           "t-test; 'within noise': the interval contains 0). nfe: what the "
           "sampler reports. minus_default: mean fid_over_floor minus the default sampler's. The converged row is "
           "the FID of what the fit aims at (the ODE's solution): a grid with a smaller ODE error moves the samples "
           "towards it, which lowers the FID only where the solution's FID is below the grid's.")
  columns = ["sampler", "method", "grid", "nfe", "seeds", "fid_over_floor_mean", "fid_over_floor_sd", "per_seed",
             "minus_default"]
  public = [{k: v for k, v in r.items() if k != "_vals"} for r in rows]
  text = write("grid_transfer_digits", "Grid transfer on digits: model-fitted grids against logsnr and edm at "
               "exact NFE", public, columns, notes)
  diff_cols = ["method", "nfe", "comparison", "mean_diff", "se_diff", "ci95", "verdict"]
  fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
  table = "\n".join(["| " + " | ".join(diff_cols) + " |", "|" + "---|" * len(diff_cols)]
                    + ["| " + " | ".join(fmt(d[c]) for c in diff_cols) + " |" for d in diffs])
  with open(os.path.join(RESULTS, "grid_transfer_digits.md"), "a") as f:
    f.write("\n## Paired differences over seeds (fid_over_floor; negative: the model grid is better)\n\n"
            + table + "\n")
    levels = [", ".join(f"{v:.3g}" for v in next(iter(g["grids"].values()))) for g in fits]
    f.write("\n## The model-fitted levels (sigma = s/a, from sigma(T) down to sigma_lo)\n\n"
            + "\n".join(f"* {g['method']} nfe {g['nfe']}: {lv}" for g, lv in zip(fits, levels)) + "\n")
  fits_public = [{k: v for k, v in f.items() if k not in ("workdir",)} for f in fits]
  with open(os.path.join(RESULTS, "grid_transfer_digits.json"), "w") as f:
    json.dump({"machine": machine(), "commit": commit(), "command": command, "minutes": minutes, "rows": public,
               "paired": diffs, "fits": fits_public}, f, indent=1)
  print(text + "\n" + table)


if __name__ == "__main__":
  main()
