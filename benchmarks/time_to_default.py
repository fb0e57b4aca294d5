"""Time to the embedded default: the README's first command (install excluded), timed end to end.

Runs ``main.py --mode train`` then ``--mode eval`` of configs/vp/digits.py in a fresh workdir, as the
README's first command does (with main.py's persistent compilation cache starting empty, as on a
fresh machine), and reports the wall seconds of each (process start and compilation
included) with the final checkpoint's digits FID over its floor (target of issue 12: <= 4 minutes at
<= 1.2x the floor). Then, on the same checkpoint, the evaluation alone under sampler variants (other
step counts), so a faster default can be chosen from measured FIDs.

    python benchmarks/time_to_default.py [--root runs/bench_time_to_default] [--variants]
"""

from __future__ import annotations

import argparse
import os
import shutil

import _util
from _util import final_metrics, run_main as run, write

CONFIG = "configs/vp/digits.py"
# Evaluation variants on the final checkpoint: label -> overrides.
VARIANTS = {
    "pc EM 250 steps": ["--config.sampling.pc.num_steps=250"],
    "pc EM 125 steps": ["--config.sampling.pc.num_steps=125"],
    "dpm_solver_pp 21 NFE": ["--config.sampling.method=dpm_solver_pp"],
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.join(_util.ROOT, "runs", "bench_time_to_default"))
  parser.add_argument("--variants", action="store_true", help="also evaluate the sampler variants")
  args = parser.parse_args()
  workdir, cache = os.path.join(args.root, "vp"), os.path.join(args.root, "xla_cache")
  for path in (workdir, cache):        # a fresh machine: nothing trained, nothing compiled
    shutil.rmtree(path, ignore_errors=True)
  cache_flag = f"--compilation_cache_dir={cache}"
  train_s = run([f"--config={CONFIG}", f"--workdir={workdir}", "--mode=train", cache_flag])
  eval_s = run([f"--config={CONFIG}", f"--workdir={workdir}", "--mode=eval", cache_flag])
  m = final_metrics(os.path.join(workdir, "eval", "progress.json"))
  rows = [dict(run="README command (train + eval)", train_s=train_s, eval_s=eval_s, total_min=(train_s + eval_s) / 60,
               nfe=m["nfe"], fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"])]
  print(rows[-1], flush=True)
  if args.variants:
    for i, (label, flags) in enumerate(VARIANTS.items()):
      folder = f"eval_variant_{i}"
      seconds = run([f"--config={CONFIG}", f"--workdir={workdir}", "--mode=eval", f"--eval_folder={folder}",
                     "--config.eval.begin_ckpt=2", cache_flag, *flags])
      v = final_metrics(os.path.join(workdir, folder, "progress.json"))
      rows.append(dict(run=f"eval of the final snapshot only, {label}", eval_s=seconds, nfe=v["nfe"],
                       fid_over_floor=v["digits_fid"] / v["digits_fid_floor_train_vs_test"]))
      print(rows[-1], flush=True)
  print(write("time_to_default", "Time to the embedded default (README command 1, install excluded)", rows,
              ["run", "train_s", "eval_s", "total_min", "nfe", "fid_over_floor"],
              "`python benchmarks/time_to_default.py --variants`: wall seconds of `main.py --mode train` and "
              "`--mode eval` of configs/vp/digits.py in a fresh workdir with an empty compilation cache (process "
              "start and compilation included), on an otherwise idle machine; FID over floor of the final snapshot (500 samples, "
              "digits FID as in digits.md). Variants: `--mode eval` of the final snapshot alone with other samplers."))


if __name__ == "__main__":
  main()
