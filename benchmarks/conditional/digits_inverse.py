"""Inverse problems on the embedded digits through main.py: super-resolution, deblurring, noisy inpainting.

Per SDE (default VE and VP), the unconditional default model (``configs/<sde>/digits.py``, 2,000 steps): the
one ``benchmarks/pipeline/digits.py`` trained (``runs/bench_digits/<sde>``) when present, else trained here
(``<root>/<sde>_unconditional``).

Then ``--mode sample --config.sampling.condition=inverse`` on the first 100 test digits, for each problem
(``PROBLEMS``; noise_std in model units, pixels in [-1, 1], so 0.05 is 2.5% of the pixel range):

(a) x2 super-resolution (2x2 average pooling), noise-free;
(b) Gaussian blur (kernel 5, std 1 pixel, zero padding) with noise_std 0.01;
(c) box inpainting (bottom half unknown) with noise_std 0.05;

and each algorithm (``ALGORITHMS``): replacement (noise-free problems only), SMC with 16 particles and with 2
(the equal-compute row, beside the one-chain methods' 201-401 evaluations per image), DDRM (its own 20 steps),
PiGDM and DPS, all but DDRM on PC with 200 steps. Each row: network evaluations per image (particles and
gradients included), PSNR to the truth in [0, 1] pixels (and of the observation alone: A^+ y, or y itself for
the blurs), measurement consistency ||y - A x|| / (noise_std sqrt(m)) (~1 for posterior samples; noise-free:
the largest |y - A x|), the share of solutions the digits classifier assigns to the true label, the per-class
digits FID over its floor, and the sampling seconds per image after compilation. Every algorithm of a problem
sees the same y.

    python -m benchmarks.conditional.digits_inverse [--sdes ve vp] [--root runs/bench_digits_inverse] [--reuse]

``--reuse`` keeps the rows whose run folder (``<workdir>/inverse_<problem>_<algorithm>``) already holds a result:
delete a folder to rerun its row.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from benchmarks.common import ROOT, merge_rows, run_main as run, run_per_sde, write

SDES = {"ve": "VE", "vp": "VP"}
N = 100
STEPS = 2000
PC_STEPS = ["--config.sampling.method=pc", "--config.sampling.pc.num_steps=200"]
INVERSE = "--config.sampling.inverse."
PROBLEMS = {   # name: (label, noise-free, flags)
    "superres": ("x2 super-resolution, noise-free", True,
                 [f"{INVERSE}operator=superres", f"{INVERSE}factor=2", f"{INVERSE}noise_std=0.0"]),
    "blur": ("Gaussian blur (kernel 5, std 1), noise_std 0.01", False,
             [f"{INVERSE}operator=blur_gaussian", f"{INVERSE}kernel_size=5", f"{INVERSE}blur_std=1.0",
              f"{INVERSE}noise_std=0.01"]),
    "inpaint": ("box inpainting (bottom half), noise_std 0.05", False,
                [f"{INVERSE}operator=mask", f"{INVERSE}mask=bottom_half", f"{INVERSE}noise_std=0.05"]),
}
ALGORITHMS = {   # name: (label, noise-free only, flags)
    "replacement": ("replacement (PC 200)", True, PC_STEPS + [f"{INVERSE}algorithm=replacement"]),
    "smc16": ("SMC, 16 particles (PC 200)", False, PC_STEPS + [f"{INVERSE}algorithm=smc", f"{INVERSE}n_particles=16"]),
    "smc2": ("SMC, 2 particles (PC 200)", False, PC_STEPS + [f"{INVERSE}algorithm=smc", f"{INVERSE}n_particles=2"]),
    "ddrm": ("DDRM (20 steps, eta 0.85)", False, [f"{INVERSE}algorithm=ddrm", f"{INVERSE}num_steps=20"]),
    "pigdm": ("PiGDM (PC 200)", False, PC_STEPS + [f"{INVERSE}algorithm=pigdm"]),
    "dps": ("DPS, step_size 1 (PC 200)", False, PC_STEPS + [f"{INVERSE}algorithm=dps", f"{INVERSE}step_size=1.0"]),
}
ROWS: list[dict] = []


def _trained(config: str, workdir: str) -> float:
  if os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS))):
    return 0.0
  shutil.rmtree(workdir, ignore_errors=True)
  return run([f"--config={config}", f"--workdir={workdir}", "--mode=train", f"--config.training.n_iters={STEPS}"])


def _newest(folder: str) -> dict:
  paths = sorted(glob.glob(os.path.join(folder, "inverse_step_*.json")), key=os.path.getmtime)
  with open(paths[-1]) as f:
    return json.load(f)


def _copy_picture(path: str, name: str) -> str:
  target = os.path.join(ROOT, "docs", name)
  shutil.copyfile(path, target)
  return os.path.relpath(target, ROOT)


def bench(sde: str, root: str, args) -> dict:
  config = f"configs/{sde}/digits.py"
  workdir = os.path.join(ROOT, "runs", "bench_digits", sde)
  if not os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS))):
    workdir = os.path.join(root, f"{sde}_unconditional")
  train_s = _trained(config, workdir)
  for problem, (problem_label, noise_free, problem_flags) in PROBLEMS.items():
    for algorithm, (label, noise_free_only, flags) in ALGORITHMS.items():
      if noise_free_only and not noise_free:
        continue
      folder = f"inverse_{problem}_{algorithm}"
      if not (args.reuse and glob.glob(os.path.join(workdir, folder, "inverse_step_*.json"))):
        run([f"--config={config}", f"--workdir={workdir}", "--mode=sample", f"--eval_folder={folder}",
             "--config.sampling.condition=inverse", f"--config.eval.num_samples={N}",
             f"--config.eval.batch_size={N}", *problem_flags, *flags])
      m = _newest(os.path.join(workdir, folder))
      ROWS.append(dict(sde=SDES[sde], problem=problem_label, algorithm=label, nfe=m["nfe"], psnr=m["psnr"],
                       psnr_observed=m["psnr_observed"], consistency=m["consistency"],
                       label_agreement=m.get("digits_label_agreement", float("nan")),
                       class_fid_over_floor=m.get("class_fid_over_floor", float("nan")),
                       nonfinite=m.get("nonfinite_samples", 0),
                       seconds_per_image=m["seconds_per_image"], compile_s=m["compile_s"],
                       picture=_copy_picture(m["picture"], f"digits_{sde}_{folder}.png")))
      print(ROWS[-1], flush=True)
  return dict(sde=SDES[sde], train_unconditional_s=train_s, workdir=os.path.relpath(workdir, ROOT))


def main():
  reuse = lambda parser: parser.add_argument("--reuse", action="store_true",
                                             help="keep rows whose run folder already holds a result")
  rows = run_per_sde(__doc__, SDES, bench, "bench_digits_inverse", reuse)
  report({r["sde"] for r in rows}, ROWS)


def report(fresh: set, rows: list[dict]) -> None:
  """Writes results/digits_inverse.{json,md} (rows of SDEs not in ``fresh`` are kept)."""
  print(write("digits_inverse", "Inverse problems on test digits through main.py", merge_rows(
      "digits_inverse", rows, "sde", fresh),
      ["sde", "problem", "algorithm", "nfe", "psnr", "psnr_observed", "consistency", "label_agreement",
       "class_fid_over_floor", "nonfinite", "seconds_per_image", "picture", "commit"],
      f"`python -m benchmarks.conditional.digits_inverse`: `main.py --mode sample "
      f"--config.sampling.condition=inverse` on the first {N} test digits (one batch of {N}) with the "
      f"unconditional default model of configs/<sde>/digits.py at step {STEPS}; noise_std in model units "
      "(pixels in [-1, 1]). Every algorithm of a problem sees the same y (fixed noise key). nfe: network "
      "evaluations per image, every particle's and every gradient's (a forward and a backward pass) counted; "
      "SMC with 2 particles is the equal-compute row. psnr: mean per-image PSNR (dB) of the solutions to the "
      "truth in [0, 1] pixels; psnr_observed: the same of the observation alone (the top row of the picture: "
      "A^+ y, or y itself for the blurs). consistency: noisy problems, mean over images of ||y - A x|| / "
      "(noise_std sqrt(m)) (~1 for posterior samples; well below 1: overfits the noise); noise-free, the "
      "largest |y - A x| (model units). "
      "label_agreement: the share of solutions the digits classifier assigns to the true label (its accuracy "
      "on the complete test digits: 0.99). class_fid_over_floor: per true class, the digits FID of the "
      "solutions against the class's train digits over that of as many test digits (~10 per class here, so "
      "noisy), averaged over classes (both nan when a sample is not finite; nonfinite: how many of the "
      f"{N} are not). seconds_per_image: sampling wall time after compilation / "
      f"{N} on 2 cores shared with other jobs (ratios within one SDE are meaningful, absolute values are not "
      "idle-machine numbers). Pictures (rows): observed | solutions | truth, 16 digits."))


if __name__ == "__main__":
  main()
