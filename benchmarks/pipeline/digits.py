"""The embedded default, end to end: train and evaluate digits under VE, VP and sub-VP.

For each SDE this runs the README's commands as subprocesses (``main.py --mode train`` then
``--mode eval``) in a fresh workdir, times them, then computes bits/dim at the final checkpoint in a
third run (the probability-flow likelihood of 297 test digits takes minutes on CPU), and records the
final checkpoint's metrics: digits FID of 500 samples against the test split and the train-versus-test
floor (both from the hidden layer of a classifier trained on the digits labels), digits KID, the
samples' class histogram, bits/dim of the dequantised test split, and NFE. The sample grids are
copied to docs/digits_<sde>_samples.png.

Then every sampler method draws 500 samples from the same final checkpoint (``--mode eval`` with
``--config.sampling.*`` overrides, one eval folder each), deterministic ones included (the
probability-flow ODE, EDM Heun, DPM-Solver++ at 10 and 20 NFE, PC with probability_flow=True),
and their digits FID / floor goes to results/digits_samplers.md (target: every method within 3x).

    python -m benchmarks.pipeline.digits [--sdes ve vp subvp] [--root runs/bench_digits] [--skip_bpd]

Rerunning some SDEs keeps the other SDEs' rows of the results files, each row naming its commit.
"""

from __future__ import annotations

import os
import shutil

from benchmarks.common import ROOT, final_metrics, merge_rows, run_main as run, run_per_sde, write

SDES = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}
# Every sampler method on the final checkpoint: label -> config.sampling overrides.
SAMPLERS = {
    "edm_heun stochastic S_churn=40 (config default)": {},
    "pc (the config's predictor / corrector, 500 steps)": dict(method="pc"),
    "pc probability_flow": {"method": "pc", "pc.predictor": "euler_maruyama", "pc.corrector": "none",
                            "pc.probability_flow": True},
    "ode tsit5 1e-5": dict(method="ode"),
    "edm_heun N=18": {"method": "edm_heun", "edm_heun.s_churn": 0.0},
    "dpm_solver_pp N=10": {"method": "dpm_solver_pp", "dpm_solver_pp.num_steps": 10},
    "dpm_solver_pp N=20": {"method": "dpm_solver_pp", "dpm_solver_pp.num_steps": 20},
    "unipc nfe=10": {"method": "unipc", "nfe": 10},
    "ald 10x100": dict(method="ald"),
}
SAMPLER_ROWS: list[dict] = []


def sampler_sweep(sde: str, config: str, workdir: str) -> None:
  for i, (label, overrides) in enumerate(SAMPLERS.items()):
    folder = f"eval_sampler_{i}"
    seconds = run([f"--config={config}", f"--workdir={workdir}", "--mode=eval", f"--eval_folder={folder}",
                   "--config.eval.begin_ckpt=1"] + [f"--config.sampling.{k}={v}" for k, v in overrides.items()])
    m = final_metrics(os.path.join(workdir, folder, "progress.json"))
    SAMPLER_ROWS.append(dict(sde=SDES[sde], sampler=label, nfe=m["nfe"], digits_fid=m["digits_fid"],
                             fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"],
                             max_abs_sample=m.get("max_abs_sample", ""), eval_s=seconds))
    print(SAMPLER_ROWS[-1], flush=True)


def bench(sde: str, root: str, args) -> dict:
  workdir = os.path.join(root, sde)
  shutil.rmtree(workdir, ignore_errors=True)
  config = f"configs/{sde}/digits.py"
  train_s = run([f"--config={config}", f"--workdir={workdir}", "--mode=train"])
  eval_s = run([f"--config={config}", f"--workdir={workdir}", "--mode=eval"])
  bpd_s, last_bpd = "not run", {"bpd_test": "not run"}
  if not args.skip_bpd:
    bpd_s = run([f"--config={config}", f"--workdir={workdir}", "--mode=eval", "--eval_folder=eval_bpd",
                 "--config.eval.enable_bpd=True", "--config.eval.enable_sampling=False", "--config.eval.begin_ckpt=1"])
    last_bpd = final_metrics(os.path.join(workdir, "eval_bpd", "progress.json"))
  sampler_sweep(sde, config, workdir)
  last = final_metrics(os.path.join(workdir, "eval", "progress.json"))
  grid = os.path.join(ROOT, "docs", f"digits_{sde}_samples.png")
  shutil.copyfile(last["samples_png"], grid)
  hist = last["class_histogram"]
  return dict(sde=SDES[sde], steps=last["step"], train_s=train_s, eval_s=eval_s, bpd_s=bpd_s, nfe=last["nfe"],
              digits_fid=last["digits_fid"], fid_floor=last["digits_fid_floor_train_vs_test"],
              fid_over_floor=last["digits_fid"] / last["digits_fid_floor_train_vs_test"],
              digits_kid=last["digits_kid"], bpd_test=last_bpd["bpd_test"],
              class_histogram=" ".join(f"{h:.2f}" for h in hist), max_class_freq=max(hist), min_class_freq=min(hist),
              grid=os.path.relpath(grid, ROOT))


def main():
  options = lambda p: p.add_argument("--skip_bpd", action="store_true", help="leave bits/dim out (18 min on VE)")
  report(run_per_sde(__doc__, SDES, bench, "bench_digits", options), SAMPLER_ROWS)


def report(rows: list[dict], sampler_rows: list[dict]) -> None:
  """Writes results/digits.{md,json} and results/digits_samplers.{md,json} from the fresh rows (those of
  SDEs not rerun are kept)."""
  fresh = {r["sde"] for r in rows}               # SDEs not rerun keep their rows (and the commit they ran at)
  rows = merge_rows("digits", rows, "sde", fresh)
  sampler_rows = merge_rows("digits_samplers", sampler_rows, "sde", fresh)
  notes = ("`python -m benchmarks.pipeline.digits`: per SDE, the README's two commands, `main.py --mode train` "
           "(configs/<sde>/digits.py: its n_iters steps (column steps) at its batch size (96 since 5f75c15, 128 before); train_s) and `--mode eval` (the "
           "final snapshot, 500 samples; eval_s), then bits/dim of the 297 dequantised test digits at the final "
           "checkpoint through the probability-flow ODE, rtol = atol = 1e-5, Hutchinson (bpd_s: `--mode eval "
           "--config.eval.enable_bpd=True --config.eval.enable_sampling=False --config.eval.begin_ckpt=1`). "
           "Wall-clock seconds include process start and compilation. Metrics of the final checkpoint (its step: "
           "column steps), sampled with the config's own sampler (column nfe). digits FID: Frechet distance of the "
           "128-d hidden features of an MLP classifier trained on the digits labels, samples vs the test split; the "
           "floor is 297 train digits vs the test split. Class histogram: the classifier's predictions for the "
           "samples, classes 0-9 (the data are ~uniform).")
  print(write("digits", "The embedded default: digits under VE, VP and sub-VP", rows,
              ["sde", "steps", "train_s", "eval_s", "bpd_s", "nfe", "digits_fid", "fid_floor", "fid_over_floor", "digits_kid",
               "bpd_test", "class_histogram", "grid", "commit"], notes))
  print(write("digits_samplers", "Every sampler on the final digits checkpoint", sampler_rows,
              ["sde", "sampler", "nfe", "digits_fid", "fid_over_floor", "max_abs_sample", "eval_s", "commit"],
              "`python -m benchmarks.pipeline.digits`: after training (EMA with warm-up), each sampler draws 500 "
              "samples from the final EMA parameters through `main.py --mode eval --config.sampling.*` (eval_s: wall "
              "seconds with process start and compilation). digits FID and its train-vs-test floor as in digits.md; "
              "target: every method within 3x the floor. max_abs_sample: the largest |x| of the samples (data lie in "
              "[-1, 1])."))


if __name__ == "__main__":
  main()
