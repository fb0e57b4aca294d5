"""Rectified flow against VP on digits: the same network, training steps and seed, every fast sampler.

Trains configs/rf/digits.py (rectified flow, velocity parameterisation, flow-matching loss) and
configs/vp/digits.py (VP, score_sde's parameterisation and DSM loss) through ``main.py --mode train``
(both configs' defaults: 1,200 steps, batch 96, seed 42, the digits DDPM++-style U-Net of
configs/default_digits.py with a positional time embedding), then for each model draws 500 samples from the
final EMA parameters with ``main.py --mode eval`` and ``--config.sampling.*`` overrides, one eval folder per
sampler:

  - the fast samplers at 5, 10, 20 and 35 NFE: EDM's Heun (deterministic; nfe= spends exactly the budget:
    H Heun steps, one Euler step when the budget is even, and the final denoising step, so 5 and 35 NFE are
    EDM's N = 3 and N = 18 levels), DPM-Solver++ and UniPC (nfe=);
  - PC Euler-Maruyama at 35 NFE (34 steps + denoising) with noise_scale eta = 0 (the probability-flow ODE)
    and 1 (the reverse SDE); EDM's stochastic Heun (S_churn = 40) at 35 NFE, the VP config's default;
  - "converged": the adaptive probability-flow ODE (tsit5, rtol = atol = 1e-5) and PC with 500 steps.

Each is scored by digits FID over its floor (benchmarks/pipeline/digits.py: classifier features, 500
samples vs the test split; the floor is train vs test digits). Bits/dim on the first ``--bpd_examples``
dequantised test digits through the probability-flow ODE (rtol = atol = 1e-5) in one more eval.
``--seeds`` re-runs the rows at ``--seed_nfes`` (default 35) with other sampling seeds (``--config.seed``:
the eval's sampling key; the checkpoint is the same), because a 500-sample digits FID moves by 0.1-0.6x
the floor from seed to seed (benchmarks/results/time_to_default.md).

    python -m benchmarks.pipeline.digits_flow [--root runs/bench_digits_flow] [--bpd_examples 100]
        [--seeds 0 1 [--seed_nfes 20 35] [--seed_processes rf]] [--fresh]

Finished steps are reused (a workdir with the final checkpoint, an eval folder with its metrics and
timing), so an interrupted run resumes where it stopped; ``--fresh`` deletes the workdirs first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics

from benchmarks.common import ROOT, final_metrics, run_main as run, write

PROCESSES = {"rf": "rectified flow", "vp": "VP"}
CONFIG = "configs/{}/digits.py"
NFES = (5, 10, 20, 35)
SEED = 42                                   # the configs' seed (training and the default sampling key)
PC_35 = {"method": "pc", "pc.predictor": "euler_maruyama", "pc.corrector": "none", "pc.num_steps": 34}


def samplers() -> list[tuple[str, str, int | str, dict]]:
  """(key, sampler, nfe, config.sampling overrides) of every evaluation on the final checkpoint. The data-prediction
  samplers clip x0 to [-1, 1] (static thresholding, the image configs' default since a4ddca0), set explicitly."""
  clip = lambda method: {f"{method}.thresholding": "static"}
  rows = []
  for nfe in NFES:
    rows += [(f"edm_heun_{nfe}", "edm_heun deterministic", nfe, {"method": "edm_heun", "edm_heun.s_churn": 0.0,
                                                                   "nfe": nfe, **clip("edm_heun")}),
             (f"dpm_solver_pp_{nfe}", "dpm_solver_pp", nfe, {"method": "dpm_solver_pp", "nfe": nfe,
                                                              **clip("dpm_solver_pp")}),
             (f"unipc_{nfe}", "unipc", nfe, {"method": "unipc", "nfe": nfe, **clip("unipc")})]
  rows += [("pc_eta0_35", "pc euler_maruyama eta=0 (probability flow)", 35, dict(PC_35, **{"pc.noise_scale": 0.0})),
           ("pc_eta1_35", "pc euler_maruyama eta=1 (reverse SDE)", 35, dict(PC_35, **{"pc.noise_scale": 1.0})),
           ("edm_heun_churn40_35", "edm_heun stochastic S_churn=40", 35, {"method": "edm_heun",
                                                                          "edm_heun.s_churn": 40.0, "nfe": 35,
                                                                          **clip("edm_heun")}),
           ("ode_tsit5", "converged: ode tsit5 rtol=atol=1e-5", "adaptive", {"method": "ode", "ode.rtol": 1e-5,
                                                                             "ode.atol": 1e-5}),
           ("pc_500", "converged: pc euler_maruyama 500 steps (reverse SDE)", 501,
            {"method": "pc", "pc.predictor": "euler_maruyama", "pc.corrector": "none", "pc.num_steps": 500})]
  return rows


def _timed(workdir: str, folder: str, args: list[str], final_step: int) -> tuple[dict, float, bool]:
  """(final metrics, wall seconds, reused) of ``main.py --mode eval --eval_folder=FOLDER ARGS``; reused when
  the folder already holds the final checkpoint's metrics and the seconds they took."""
  path = os.path.join(workdir, folder)
  stamp = os.path.join(path, "bench_seconds.json")
  if os.path.exists(stamp) and os.path.exists(os.path.join(path, "progress.json")):
    m = final_metrics(os.path.join(path, "progress.json"))
    if m["step"] == final_step:
      with open(stamp) as f:
        return m, json.load(f)["seconds"], True
  shutil.rmtree(path, ignore_errors=True)
  seconds = run(args + [f"--eval_folder={folder}"])
  with open(stamp, "w") as f:
    json.dump({"seconds": seconds, "args": args}, f)
  return final_metrics(os.path.join(path, "progress.json")), seconds, False


def train(process: str, workdir: str, n_iters: int, fresh: bool) -> dict:
  config = CONFIG.format(process)
  stamp = os.path.join(workdir, "bench_train.json")
  if fresh:
    shutil.rmtree(workdir, ignore_errors=True)
  if os.path.isdir(os.path.join(workdir, "checkpoints", str(n_iters))) and os.path.exists(stamp):
    with open(stamp) as f:
      return dict(json.load(f), reused=True)
  resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
  seconds = run([f"--config={config}", f"--workdir={workdir}", "--mode=train"])
  out = {"train_s": seconds, "resumed": resumed}
  with open(stamp, "w") as f:
    json.dump(out, f)
  return dict(out, reused=False)


def bench(process: str, args) -> tuple[dict, list[dict]]:
  from schema import load_config_file

  config = CONFIG.format(process)
  training = load_config_file(os.path.join(ROOT, config)).training
  last = -(-training.n_iters // training.snapshot_freq)                 # the final checkpoint's number
  workdir = os.path.join(args.root, process)
  trained = train(process, workdir, training.n_iters, args.fresh)
  base = [f"--config={config}", f"--workdir={workdir}", "--mode=eval", f"--config.eval.begin_ckpt={last}",
          f"--config.eval.end_ckpt={last}"]
  bpd, bpd_s, _ = _timed(workdir, "eval_flow_bpd", base + [
      "--config.eval.enable_bpd=True", "--config.eval.enable_sampling=False", "--config.eval.bpd_dataset=test",
      f"--config.eval.bpd_max_examples={args.bpd_examples}", "--config.eval.bpd_rtol=1e-5",
      "--config.eval.bpd_atol=1e-5"], training.n_iters)
  summary = dict(process=PROCESSES[process], config=config, steps=training.n_iters, train_s=trained["train_s"],
                 bpd_test=bpd["bpd_test"], bpd_examples=args.bpd_examples, bpd_s=bpd_s, eval_loss=bpd.get("eval_loss"))
  print(summary, flush=True)
  rows = []
  for key, label, nfe, overrides in samplers():
    extra = [s for s in args.seeds if s != SEED] if nfe in args.seed_nfes and process in args.seed_processes else []
    for seed in [SEED] + extra:
      folder = f"eval_flow_{key}" + ("" if seed == SEED else f"_seed{seed}")
      m, seconds, reused = _timed(workdir, folder, base + ["--config.eval.enable_loss=False", f"--config.seed={seed}"]
                                  + [f"--config.sampling.{k}={v}" for k, v in overrides.items()], training.n_iters)
      rows.append(dict(process=PROCESSES[process], sampler=label, nfe_budget=nfe, nfe=m["nfe"], seed=seed,
                       digits_fid=m["digits_fid"], fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"],
                       max_abs_sample=m["max_abs_sample"], eval_s=seconds, reused=reused))
      print(rows[-1], flush=True)
    unclipped = os.path.join(workdir, f"eval_flow_{key}_thresholding_none")
    if os.path.exists(os.path.join(unclipped, "bench_seconds.json")):   # kept from a run before a4ddca0
      m = final_metrics(os.path.join(unclipped, "progress.json"))
      with open(os.path.join(unclipped, "bench_seconds.json")) as f:
        seconds = json.load(f)["seconds"]
      rows.append(dict(process=PROCESSES[process], sampler=label + ", thresholding none", nfe_budget=nfe, nfe=m["nfe"],
                       seed=SEED, digits_fid=m["digits_fid"],
                       fid_over_floor=m["digits_fid"] / m["digits_fid_floor_train_vs_test"],
                       max_abs_sample=m["max_abs_sample"], eval_s=seconds, reused=True))
  return summary, rows


def means(rows: list[dict]) -> list[dict]:
  """The rows with more than one sampling seed: mean and sd of fid_over_floor over the seeds."""
  groups: dict[tuple, list[float]] = {}
  for r in rows:
    groups.setdefault((r["process"], r["sampler"], r["nfe"]), []).append(r["fid_over_floor"])
  return [dict(process=p, sampler=s, nfe=n, seeds=len(v), fid_over_floor_mean=statistics.mean(v),
               fid_over_floor_sd=statistics.stdev(v)) for (p, s, n), v in groups.items() if len(v) > 1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.join(ROOT, "runs", "bench_digits_flow"))
  parser.add_argument("--processes", nargs="*", default=list(PROCESSES), choices=list(PROCESSES))
  parser.add_argument("--seeds", nargs="*", type=int, default=[], help="extra sampling seeds (of --seed_nfes rows)")
  parser.add_argument("--seed_nfes", nargs="*", type=int, default=[35],
                      help="the budgets whose rows get the extra seeds")
  parser.add_argument("--seed_processes", nargs="*", default=list(PROCESSES), choices=list(PROCESSES),
                      help="the processes whose --seed_nfes rows get the extra seeds")
  parser.add_argument("--bpd_examples", type=int, default=100, help="test digits in bits/dim")
  parser.add_argument("--fresh", action="store_true", help="delete the workdirs first (else finished steps are reused)")
  args = parser.parse_args()
  summaries, rows = [], []
  for process in args.processes:
    summary, process_rows = bench(process, args)
    summaries.append(summary)
    rows += process_rows
  report(summaries, rows, args)


def report(summaries: list[dict], rows: list[dict], args) -> None:
  command = "python -m benchmarks.pipeline.digits_flow"
  if args.seeds:
    command += f" --seeds {' '.join(map(str, args.seeds))}"
    if args.seed_nfes != [35]:
      command += f" --seed_nfes {' '.join(map(str, args.seed_nfes))}"
    if set(args.seed_processes) != set(PROCESSES):
      command += f" --seed_processes {' '.join(args.seed_processes)}"
  if args.bpd_examples != 100:
    command += f" --bpd_examples {args.bpd_examples}"
  notes = (
      f"`{command}` (runs under {os.path.relpath(args.root, ROOT)}/{{rf,vp}}; finished steps reused on a rerun). "
      "Training: `python main.py --config configs/<rf|vp>/digits.py --workdir <root>/<rf|vp> --mode train` (train_s: "
      "wall seconds, process start and compilation included). Evaluation of the final EMA checkpoint: `python main.py "
      "--config configs/<rf|vp>/digits.py --workdir <root>/<rf|vp> --mode eval --config.eval.begin_ckpt=1 "
      "--config.eval.end_ckpt=1 --config.eval.enable_loss=False --config.seed=<seed> --config.sampling.<...>` with the "
      "sampler's overrides (benchmarks/pipeline/digits_flow.py: samplers()); 500 samples; eval_s its wall seconds "
      "including process start and compilation, measured while other test runs shared the 2 cores, so "
      "seconds are indicative only. digits FID: Frechet distance of the 128-d hidden features of an MLP classifier "
      "trained on the digits labels, samples vs the 297 test digits; fid_over_floor divides by the train-vs-test "
      "floor (0.857). max_abs_sample: the largest |x| of the samples (data in [-1, 1]). nfe_budget: the asked "
      "budget, nfe: the evaluations spent (adaptive: the ODE's count). Seed 42 is the configs' own sampling seed. "
      "Bits/dim: `--mode eval --config.eval.enable_bpd=True --config.eval.enable_sampling=False "
      f"--config.eval.bpd_max_examples={args.bpd_examples}` (the first {args.bpd_examples} dequantised test digits, "
      "probability-flow ODE, rtol = atol = 1e-5, Hutchinson); eval_loss is each model's own training objective on "
      "the test split (flow matching for RF, DSM for VP: not comparable across rows). EDM Heun, DPM-Solver++ and UniPC "
      "clip their data prediction to [-1, 1] (static thresholding, the configs' default since a4ddca0; hence "
      "max_abs_sample 1.0); rows named 'thresholding none' (if any) come from eval folders "
      "eval_flow_<key>_thresholding_none left in the workdir by an earlier run without it.")
  columns = ["process", "sampler", "nfe_budget", "nfe", "seed", "digits_fid", "fid_over_floor", "max_abs_sample",
             "eval_s"]
  text = write("digits_flow", "Rectified flow vs VP on digits: same network, steps and seed", rows, columns, notes)
  with open(os.path.join(ROOT, "benchmarks", "results", "digits_flow.json")) as f:
    data = json.load(f)
  data.update(command=command, models=summaries, seed_means=means(rows))
  with open(os.path.join(ROOT, "benchmarks", "results", "digits_flow.json"), "w") as f:
    json.dump(data, f, indent=1)
  fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
  extra = ["", "## Models", "", "| process | config | steps | train_s | bpd_test | bpd_examples | bpd_s | eval_loss |",
           "|---|---|---|---|---|---|---|---|"]
  extra += ["| " + " | ".join(fmt(s[c]) for c in ("process", "config", "steps", "train_s", "bpd_test", "bpd_examples",
                                                   "bpd_s", "eval_loss")) + " |" for s in summaries]
  names = [PROCESSES[p] for p in args.processes]
  pivot: dict[tuple, dict] = {}
  for r in rows:
    if r["seed"] == SEED:
      pivot.setdefault((r["sampler"], r["nfe_budget"]), {})[r["process"]] = r["fid_over_floor"]
  extra += ["", f"## fid_over_floor side by side (seed {SEED})", "", "| sampler | nfe | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names)]
  extra += [f"| {sampler} | {nfe} | " + " | ".join(fmt(v.get(n, "")) for n in names) + " |"
            for (sampler, nfe), v in pivot.items()]
  seed_rows = means(rows)
  if seed_rows:
    extra += ["", "## Over sampling seeds", "", "| process | sampler | nfe | seeds | fid_over_floor mean | sd |",
              "|---|---|---|---|---|---|"]
    extra += [f"| {r['process']} | {r['sampler']} | {r['nfe']} | {r['seeds']} | {r['fid_over_floor_mean']:.3g} | "
              f"{r['fid_over_floor_sd']:.3g} |" for r in seed_rows]
  with open(os.path.join(ROOT, "benchmarks", "results", "digits_flow.md"), "a") as f:
    f.write("\n".join(extra) + "\n")
  print(text + "\n".join(extra))


if __name__ == "__main__":
  main()
