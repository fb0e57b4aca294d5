"""Controllable generation on the embedded digits, through main.py: class-conditional and inpainting.

Per SDE (default VE), in --root:
1. a class-conditional score network, ``configs/<sde>/digits.py --config.model.num_classes=10`` (label
   dropout 0.1), trained as the default (2,000 steps);
2. a noise-conditional classifier, ``configs/<sde>/digits_classifier.py`` (2,000 steps; its test accuracy
   at t/T = 0, 0.25, ..., 1 from ``--mode eval``);
3. the unconditional default model: the one ``benchmarks/pipeline/digits.py`` trained (``runs/bench_digits/<sde>``)
   when present, else trained here.

Then ``--mode sample --config.sampling.condition=class`` draws 500 digits, 50 per class, with
DPM-Solver++ (20 steps, 21 NFE): classifier-free guidance on (1) at several scales, classifier guidance
on (3) with (2) at several scales. Each row: the share the digits classifier (the FID one) assigns to the
requested class (target >= 0.9), and the per-class digits FID over its floor (the class's test digits
against its train digits at the same sample size; target <= 3).

``--config.sampling.condition=inpaint`` completes the bottom half of the first 100 test digits with (3):
replacement (PC and DPM-Solver++), RePaint (PC, 10 resamplings), SMC (PC, 16 particles), PC with 200
steps, and SMC with 2 particles (the equal-compute row). Each row: network evaluations per image (every
particle's), the share of completions the digits classifier assigns to the original digit's label (beside its
accuracy on the complete test digits).

    python -m benchmarks.conditional.digits_conditional [--sdes ve vp subvp] [--root runs/bench_digits_conditional]
    python -m benchmarks.conditional.digits_conditional --inpaint-only --sdes ve vp --root runs/bench_digits_inverse
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from benchmarks.common import ROOT, final_metrics, merge_rows, run_main as run, run_per_sde, write

SDES = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}
CLASS_N = 500
FAST = ["--config.sampling.method=dpm_solver_pp", "--config.sampling.dpm_solver_pp.num_steps=20"]
CFG_SCALES = (0.0, 1.0, 2.0, 3.0)
CLASSIFIER_SCALES = (1.0, 2.0, 4.0)
INPAINT_N = 100
PC_STEPS = ["--config.sampling.method=pc", "--config.sampling.pc.num_steps=200"]
INPAINT = {
    "replacement pc": PC_STEPS + ["--config.sampling.inpaint.algorithm=replacement"],
    "replacement dpm_solver_pp": FAST + ["--config.sampling.inpaint.algorithm=replacement"],
    "repaint pc (10)": PC_STEPS + ["--config.sampling.inpaint.algorithm=repaint", "--config.sampling.inpaint.n_resample=10"],
    "smc pc (16 particles)": PC_STEPS + ["--config.sampling.inpaint.algorithm=smc", "--config.sampling.inpaint.n_particles=16"],
    # equal compute with replacement pc (VP: 201 x 2 = 402 network evaluations per image; VE replacement: 401)
    "smc pc (2 particles)": PC_STEPS + ["--config.sampling.inpaint.algorithm=smc", "--config.sampling.inpaint.n_particles=2"],
}
CLASS_ROWS: list[dict] = []
INPAINT_ROWS: list[dict] = []
CLASSIFIER_ROWS: list[dict] = []


def _trained(config: str, workdir: str, extra: list[str] = ()) -> float:
  if os.path.isdir(os.path.join(workdir, "checkpoints", "2000")):
    return 0.0
  shutil.rmtree(workdir, ignore_errors=True)
  return run([f"--config={config}", f"--workdir={workdir}", "--mode=train", *extra])


def _newest(folder: str, prefix: str) -> dict:
  paths = sorted(glob.glob(os.path.join(folder, f"{prefix}_step_*.json")), key=os.path.getmtime)
  with open(paths[-1]) as f:
    return json.load(f)


def bench(sde: str, root: str, args) -> dict:
  config, classifier_config = f"configs/{sde}/digits.py", f"configs/{sde}/digits_classifier.py"
  cond, clf = os.path.join(root, f"{sde}_class_conditional"), os.path.join(root, f"{sde}_classifier")
  uncond = os.path.join(ROOT, "runs", "bench_digits", sde)
  if not os.path.isdir(os.path.join(uncond, "checkpoints", "2000")):
    uncond = os.path.join(root, f"{sde}_unconditional")
  if args.inpaint_only:
    times = {"train_unconditional_s": _trained(config, uncond)}
    _inpaint_rows(sde, config, uncond)
    return dict(sde=SDES[sde], **times)
  cond_flags = ["--config.model.num_classes=10"]
  times = {"train_class_conditional_s": _trained(config, cond, cond_flags),
           "train_classifier_s": _trained(classifier_config, clf),
           "train_unconditional_s": _trained(config, uncond)}
  shutil.rmtree(os.path.join(clf, "eval"), ignore_errors=True)
  run([f"--config={classifier_config}", f"--workdir={clf}", "--mode=eval", "--config.eval.begin_ckpt=1"])
  accuracy = final_metrics(os.path.join(clf, "eval", "progress.json"))
  CLASSIFIER_ROWS.append(dict(sde=SDES[sde], **{k: v for k, v in accuracy.items() if k.startswith("accuracy")}))
  print(CLASSIFIER_ROWS[-1], flush=True)
  common = [f"--config.eval.num_samples={CLASS_N}", f"--config.eval.batch_size={CLASS_N}",
            "--config.sampling.condition=class"] + FAST
  rows = [("classifier-free", s, cond, common + cond_flags + [f"--config.sampling.guidance_scale={s}"])
          for s in CFG_SCALES]
  rows += [("classifier", s, uncond, common + [f"--config.sampling.guidance_scale={s}",
                                               f"--config.sampling.classifier_config={classifier_config}",
                                               f"--config.sampling.classifier_workdir={clf}"])
           for s in CLASSIFIER_SCALES]
  for guidance, scale, workdir, flags in rows:
    folder = f"class_{guidance}_{scale:g}"
    seconds = run([f"--config={config}", f"--workdir={workdir}", "--mode=sample", f"--eval_folder={folder}", *flags])
    m = _newest(os.path.join(workdir, folder), "class")
    CLASS_ROWS.append(dict(sde=SDES[sde], guidance=guidance, scale=scale, nfe=m["nfe"], class_share=m["class_share"],
                           class_fid_over_floor=m["class_fid_over_floor"],
                           worst_class_share=min(v["share"] for v in m["per_class"].values()), sample_s=seconds,
                           picture=_copy_picture(m["picture"], f"digits_{sde}_class_{guidance}_{scale:g}.png")))
    print(CLASS_ROWS[-1], flush=True)
  _inpaint_rows(sde, config, uncond)
  print({"sde": SDES[sde], **times}, flush=True)        # 0: a checkpoint in place was reused
  return dict(sde=SDES[sde], **times)


def _inpaint_rows(sde: str, config: str, uncond: str) -> None:
  for label, flags in INPAINT.items():
    folder = "inpaint_" + "_".join(label.replace("(", "").replace(")", "").split()[:3])
    seconds = run([f"--config={config}", f"--workdir={uncond}", "--mode=sample", f"--eval_folder={folder}",
                   "--config.sampling.condition=inpaint", "--config.sampling.inpaint.mask=bottom_half",
                   f"--config.eval.num_samples={INPAINT_N}", f"--config.eval.batch_size={INPAINT_N}", *flags])
    m = _newest(os.path.join(uncond, folder), "inpaint")
    INPAINT_ROWS.append(dict(sde=SDES[sde], algorithm=label, nfe=m["nfe"], label_agreement=m["digits_label_agreement"],
                             classifier_test_accuracy=m["classifier_test_accuracy"],
                             observed_error=m["observed_error"], sample_s=seconds,
                             picture=_copy_picture(m["picture"], f"digits_{sde}_{folder}.png")))
    print(INPAINT_ROWS[-1], flush=True)


def _copy_picture(path: str, name: str) -> str:
  target = os.path.join(ROOT, "docs", name)
  shutil.copyfile(path, target)
  return os.path.relpath(target, ROOT)


def main():
  def options(parser):
    parser.add_argument("--inpaint-only", action="store_true",
                        help="only the inpainting rows (the unconditional model of --root or runs/bench_digits)")
  rows = run_per_sde(__doc__, SDES, bench, "bench_digits_conditional", options)
  report({r["sde"] for r in rows}, CLASSIFIER_ROWS, CLASS_ROWS, INPAINT_ROWS)


def report(fresh: set, classifier_rows: list[dict], class_rows: list[dict], inpaint_rows: list[dict]) -> None:
  """Writes the results files of the rows measured (rows of SDEs not in ``fresh`` are kept)."""
  if classifier_rows:
    _report_class(fresh, classifier_rows, class_rows)
  _report_inpaint(fresh, inpaint_rows)


def _report_class(fresh: set, classifier_rows: list[dict], class_rows: list[dict]) -> None:
  print(write("digits_classifier", "The noise-conditional digits classifier: test accuracy at x_t", merge_rows(
      "digits_classifier", classifier_rows, "sde", fresh),
      ["sde"] + [k for k in classifier_rows[0] if k.startswith("accuracy")] + ["commit"],
      "`--mode eval` of configs/<sde>/digits_classifier.py at step 2000: the share of the 297 test digits, each "
      "perturbed once to x_t ~ p_t(x_t | x_0) at t = t_min + f (T - t_min), classified correctly."))
  print(write("digits_class_conditional", "Class-conditional digits through main.py", merge_rows(
      "digits_class_conditional", class_rows, "sde", fresh),
      ["sde", "guidance", "scale", "nfe", "class_share", "worst_class_share", "class_fid_over_floor", "sample_s",
       "picture", "commit"],
      f"`--mode sample --config.sampling.condition=class`, {CLASS_N} samples (50 per class), DPM-Solver++ 20 steps. "
      "classifier-free: the class-conditional network (model.num_classes=10, label dropout 0.1) at "
      "sampling.guidance_scale (0 = its unconditional score, 1 = its conditional score; 2 network calls per "
      "NFE otherwise); classifier: the unconditional default model guided by the noise-conditional classifier "
      "(a score call plus the classifier's gradient per NFE). class_share: the share the digits FID classifier "
      "assigns to the requested class (target >= 0.9); worst_class_share: the lowest class's share; "
      "class_fid_over_floor: per class, the digits FID of its samples against its train digits over the same "
      "FID for its test digits (same sample size), averaged over classes (target <= 3)."))


def _report_inpaint(fresh: set, inpaint_rows: list[dict]) -> None:
  print(write("digits_inpainting", "Inpainting the bottom half of test digits through main.py", merge_rows(
      "digits_inpainting", inpaint_rows, "sde", fresh),
      ["sde", "algorithm", "nfe", "label_agreement", "classifier_test_accuracy", "observed_error", "sample_s",
       "picture", "commit"],
      f"`--mode sample --config.sampling.condition=inpaint --config.sampling.inpaint.mask=bottom_half` on the "
      f"first {INPAINT_N} test digits with the unconditional default model. nfe: network evaluations per "
      "image, every particle's included (smc with 2 particles is the equal-compute row for replacement pc). "
      "label_agreement: the share of "
      "completions the digits classifier assigns to the original digit's label; observed_error: the largest "
      "change of an observed pixel (0: kept exactly). Pictures: observed | completions | truth."))


if __name__ == "__main__":
  main()
