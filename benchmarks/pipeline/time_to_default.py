"""Time to the embedded default: the README's first command (install excluded), timed end to end.

Runs ``main.py --mode train`` then ``--mode eval`` of configs/vp/digits.py in a fresh workdir, as the
README's first command does (with main.py's persistent compilation cache starting empty, as on a
fresh machine), and reports the wall seconds of each (process start and compilation
included) with the final checkpoint's digits FID over its floor (target of issue 12: <= 4 minutes at
<= 1.2x the floor). Then, on the same checkpoint, the evaluation alone under sampler variants (other
step counts, other samplers), each with ``--seeds`` sampling seeds: a 500-sample digits FID against the
297 test digits moves by 0.1-0.6x the floor from seed to seed (sd over 3 seeds), so a faster default is chosen from
the mean over seeds, not from one draw.

    python -m benchmarks.pipeline.time_to_default [--root runs/bench_time_to_default] [--variants [--seeds 3]]
    python -m benchmarks.pipeline.time_to_default --variants_only      # variants on the last run's checkpoint
    python -m benchmarks.pipeline.time_to_default --set training.n_iters=600 --name time_to_default_recipes \
        --variants --only_default --keep                                 # another recipe, its row added

``--set FIELD=VALUE`` (repeatable) overrides the config in every command (another training recipe); with
``--keep`` the rows of other recipes already in results/NAME.json stay.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics

from benchmarks.common import ROOT, final_metrics, merge_rows, run_main as run, write

CONFIG = "configs/vp/digits.py"


def get_config(path: str = CONFIG):
  from schema import load_config_file

  return load_config_file(os.path.join(ROOT, path))


# Evaluation variants on the final checkpoint: label -> overrides.
VARIANTS = {
    "edm_heun stochastic (S_churn 40), 35 NFE (default)": [],
    "pc, the config's 500 steps (the former default)": ["--config.sampling.method=pc"],
    "dpm_solver_pp 21 NFE": ["--config.sampling.method=dpm_solver_pp"],
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.join(ROOT, "runs", "bench_time_to_default"))
  parser.add_argument("--config", default=CONFIG, help="another digits config (e.g. configs/ve/digits.py)")
  parser.add_argument("--name", default="time_to_default", help="results file (results/NAME.md)")
  parser.add_argument("--variants", action="store_true", help="also evaluate the sampler variants")
  parser.add_argument("--variants_only", action="store_true", help="only the variants, on the last run's checkpoint")
  parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per variant (config.seed 0..N-1)")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a config override for every command, e.g. training.n_iters=600 (repeatable)")
  parser.add_argument("--only_default", action="store_true", help="of the variants, only the config's own sampler")
  parser.add_argument("--keep", action="store_true", help="keep the rows of other recipes in results/NAME.json")
  parser.add_argument("--note", default="", help="a sentence added to the results' notes (e.g. a shared machine)")
  args = parser.parse_args()
  recipe = " ".join(args.set) or "the config"
  sets = [f"--config.{kv}" for kv in args.set]
  workdir = os.path.join(args.root, os.path.basename(os.path.dirname(args.config)))
  cache = os.path.join(args.root, "xla_cache")
  cache_flag = f"--compilation_cache_dir={cache}"
  rows = []
  if not args.variants_only:
    for path in (workdir, cache):        # a fresh machine: nothing trained, nothing compiled
      shutil.rmtree(path, ignore_errors=True)
    train_s = run([f"--config={args.config}", f"--workdir={workdir}", "--mode=train", cache_flag, *sets])
    eval_s = run([f"--config={args.config}", f"--workdir={workdir}", "--mode=eval", cache_flag, *sets])
    m = final_metrics(os.path.join(workdir, "eval", "progress.json"))
    rows.append(dict(recipe=recipe, run="README command (train + eval)", train_s=train_s, eval_s=eval_s,
                     total_min=(train_s + eval_s) / 60, nfe=m["nfe"],
                     fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"]))
    print(rows[-1], flush=True)
  if args.variants or args.variants_only:
    training = get_config(args.config).training
    n_iters = int(dict(kv.split("=", 1) for kv in args.set).get("training.n_iters", training.n_iters))
    last = -(-n_iters // training.snapshot_freq)                          # the final checkpoint's number
    variants = list(VARIANTS.items())[:1] if args.only_default else list(VARIANTS.items())
    for i, (label, flags) in enumerate(variants):
      seconds, ratios = [], []
      for seed in range(args.seeds):
        folder = f"eval_variant_{i}_seed{seed}"
        shutil.rmtree(os.path.join(workdir, folder), ignore_errors=True)
        seconds.append(run([f"--config={args.config}", f"--workdir={workdir}", "--mode=eval", f"--eval_folder={folder}",
                            f"--config.eval.begin_ckpt={last}", f"--config.seed={seed}", cache_flag, *sets, *flags]))
        v = final_metrics(os.path.join(workdir, folder, "progress.json"))
        ratios.append(v["digits_fid"] / v["digits_fid_floor_train_vs_test"])
      rows.append(dict(recipe=recipe, run=f"eval of the final snapshot only, {label}", eval_s=statistics.median(seconds),
                       nfe=v["nfe"], fid_over_floor=statistics.mean(ratios),
                       fid_over_floor_sd=statistics.stdev(ratios) if len(ratios) > 1 else float("nan"),
                       seeds=len(ratios)))
      print(rows[-1], [round(r, 3) for r in ratios], flush=True)
  if args.keep:
    rows = merge_rows(args.name, rows, "recipe", {recipe})
  print(write(args.name, f"Time to the embedded default (README command 1, install excluded): {args.config}", rows,
              ["recipe", "run", "train_s", "eval_s", "total_min", "nfe", "fid_over_floor", "fid_over_floor_sd", "seeds"],
              "`python -m benchmarks.pipeline.time_to_default --variants`: wall seconds of `main.py --mode train` and "
              "`--mode eval` of the config in a fresh workdir with an empty compilation cache (process "
              "start and compilation included), on an otherwise idle machine; FID over floor of the final snapshot (500 samples, "
              "digits FID as in digits.md). Variants: `--mode eval` of the final snapshot alone with other samplers, "
              "fid_over_floor the mean over sampling seeds (`--config.seed` 0..seeds-1), sd their standard deviation; "
              "eval_s the median over seeds." + (f" {args.note}" if args.note else "")))


if __name__ == "__main__":
  main()
