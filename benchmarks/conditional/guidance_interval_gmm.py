"""A guidance interval against the oracle: does limiting guidance to (sigma_lo, sigma_hi] keep the class's modes?

Data: a 1-D mixture of four components in two classes, each class itself bimodal and its small mode sitting on
the other class's side:

    class A: N(-4, 0.5^2) weight 0.35, N(+1, 0.4^2) weight 0.15      (within A: 0.7 / 0.3)
    class B: N(-1, 0.4^2) weight 0.15, N(+4, 0.5^2) weight 0.35

At high noise the classes' big modes dominate each side, so the exact p_t(A | x) is small around A's small mode
at +1: guidance at scale w > 1 there pushes its mass to -4 (over-sharpening drops the mode). At low noise the
modes are separated and p_t(A | x) ~ 1 on both of A's modes, so guidance changes little. Kynkäänniemi et al.
2024 ("Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models")
apply the guidance only for sigma(t) = s(t)/a(t) in (sigma_lo, sigma_hi], the conditional score alone
(w = 1) elsewhere; ``samplers.classifier_free_score_fn(..., interval=, sde=)``.

Scores are exact (``data_lib.GaussianMixture``): the conditional one is ``restrict(CLASS)``'s, the unconditional
one the whole mixture's (classifier-free guidance); classifier guidance (VP rows) uses the exact classifier
``class_log_likelihood_t``. The target is p(x | A) exactly; scale 1 samples it, so every error of a scale > 1
row is guidance's. Metrics (``GaussianMixture.mode_metrics`` of p(x | A), each sample assigned to A's nearest
mode): tv of the within-class mode weights against the exact 0.7 / 0.3, the small mode's share, and the
worst mode-mean / spread errors, each beside the 99% floor of exact class-A samples of the same size
(``metric_floor``); off_class: the share of samples nearer a class-B mode than to any A mode.

Digits (``--digits``): a class-conditional VP digits network (``configs/vp/digits.py --config.model.num_classes=10``,
trained here if ``--digits-root`` holds no checkpoint) sampled through ``main.py --mode sample
--config.sampling.condition=class`` (500 samples, 50 per class, DPM-Solver++ 21 NFE) at classifier-free scales
2 and 3 with and without intervals; the digits classifier's share of the requested class and the per-class digits
FID over its floor, as ``benchmarks/results/digits_class_conditional.md``.

    python -m benchmarks.conditional.guidance_interval_gmm [--n 8192] [--digits [--digits-root DIR]]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import jax
import numpy as np

import samplers
import sde_lib
from benchmarks.common import ROOT, RESULTS, run_main, write
from data_lib import GaussianMixture

MIXTURE = GaussianMixture([0.35, 0.15, 0.15, 0.35], [[-4.0], [1.0], [-1.0], [4.0]], [[0.25], [0.16], [0.16], [0.25]])
CLASS = (0, 1)                                  # components of class A; (2, 3) are class B
SMALL_MODE = 1                                  # A's mode at +1, index 1 of restrict(CLASS)
SDES = {"VE": sde_lib.VESDE(0.01, 50.0, 1000), "VP": sde_lib.VPSDE(0.1, 20.0, 1000)}
SAMPLER = ("dpm_solver_pp", dict(num_steps=20))  # 21 NFE, the fast sampler of the digits benchmark
SCALES = (1.0, 2.0, 4.0)
# None: every noise level (guidance without an interval); then low, mid, mid-high and high noise levels.
INTERVALS = (None, (0.0, 1.0), (0.3, 3.0), (1.0, 5.0), (5.0, float("inf")))
PICTURE = os.path.join(ROOT, "docs", "guidance_interval_gmm.png")


def _label(interval) -> str:
  return "everywhere" if interval is None else f"({interval[0]:g}, {interval[1]:g}]"


def guided_score(sde, guidance: str, scale: float, interval):
  g = MIXTURE
  if guidance == "classifier-free":
    return samplers.classifier_free_score_fn(g.restrict(CLASS).score_fn(sde), g.score_fn(sde), scale,
                                             interval=interval, sde=sde)
  return samplers.guided_score_fn(g.score_fn(sde), lambda x, t: g.class_log_likelihood_t(x, t, sde, CLASS), scale,
                                  interval=interval, sde=sde)


def sample(sde, guidance: str, scale: float, interval, n: int):
  method, options = SAMPLER
  fn = samplers.get_sampler(sde, (n, 1), method, **options)
  score = guided_score(sde, guidance, scale, interval)
  t0 = time.perf_counter()
  x, nfe = jax.jit(lambda k: fn(k, score))(jax.random.key(0))
  return np.asarray(x), int(nfe), time.perf_counter() - t0


def metrics(x: np.ndarray, target: GaussianMixture, floor: dict) -> dict:
  m = target.mode_metrics(x)
  comp = np.asarray(target.nearest_component(x))
  nearest = np.asarray(MIXTURE.nearest_component(x))
  return dict(tv=m["tv"], tv_floor=floor["tv"], tv_over_floor=m["tv"] / floor["tv"],
              small_mode_share=float(np.mean(comp == SMALL_MODE)), mean_err=m["mean_err"], mean_floor=floor["mean_err"],
              std_err=m["std_err"], std_floor=floor["std_err"], off_class=float(np.mean(~np.isin(nearest, CLASS))))


def rows(n: int) -> tuple[list[dict], dict]:
  target = MIXTURE.restrict(CLASS)
  floor = target.metric_floor(jax.random.key(1), n)
  out, kept = [], {}
  cases = [("classifier-free", sde_name) for sde_name in SDES] + [("classifier", "VP")]
  for guidance, sde_name in cases:
    sde = SDES[sde_name]
    for scale in SCALES:
      for interval in (INTERVALS if scale != 1.0 else (None,)):
        x, nfe, seconds = sample(sde, guidance, scale, interval, n)
        out.append(dict(sde=sde_name, guidance=guidance, scale=scale, interval=_label(interval), nfe=nfe,
                        **metrics(x, target, floor), seconds=seconds))
        print(out[-1], flush=True)
        if guidance == "classifier-free":
          kept[(sde_name, scale, _label(interval))] = x[:, 0]
  return out, kept


def picture(samples: dict, n: int, path: str = PICTURE) -> None:
  """Per SDE: histograms of scale 4 everywhere and scale 4 in two intervals over the exact p(x | A)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  target = MIXTURE.restrict(CLASS)
  grid = np.linspace(-7, 7, 561, dtype=np.float32)
  density = np.exp(np.asarray(target.log_prob(grid[:, None])))
  shown = [(4.0, "everywhere"), (4.0, "(0, 1]"), (4.0, "(0.3, 3]"), (1.0, "everywhere")]
  fig, axs = plt.subplots(1, len(SDES), figsize=(5.2 * len(SDES), 3.2), sharey=True)
  for ax, sde_name in zip(np.atleast_1d(axs), SDES):
    for (scale, interval), colour in zip(shown, ["tab:red", "tab:blue", "tab:green", "tab:grey"]):
      name = f"w = {scale:g}" + ("" if scale == 1.0 else " everywhere" if interval == "everywhere" else
                                 f", sigma in {interval}")
      ax.hist(samples[(sde_name, scale, interval)], bins=140, range=(-7, 7), density=True, histtype="step",
              color=colour, label=name)
    ax.plot(grid, density, "k--", lw=1, label="exact p(x | A)")
    ax.set_title(f"{sde_name}, classifier-free guidance, DPM-Solver++ 21 NFE, n = {n}", fontsize=8)
    ax.set_xlabel("x")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print("wrote", path, flush=True)


DIGITS_N = 500
DIGITS_ROWS = [(1.0, None)] + [(w, i) for w in (2.0, 3.0) for i in (None, (0.0, 1.0), (0.3, 3.0))]
DIGITS_COLUMNS = ["scale", "interval", "nfe", "class_share", "worst_class_share", "class_fid_over_floor", "sample_s"]


def digits_rows(root: str) -> list[dict]:
  config, workdir = "configs/vp/digits.py", os.path.join(root, "vp_class_conditional")
  cond = ["--config.model.num_classes=10"]
  if not glob.glob(os.path.join(workdir, "checkpoints", "*")):
    run_main([f"--config={config}", f"--workdir={workdir}", "--mode=train", *cond])
  out = []
  for scale, interval in DIGITS_ROWS:
    folder = f"class_{scale:g}_" + ("all" if interval is None else f"{interval[0]:g}_{interval[1]:g}")
    flags = cond + ["--config.sampling.condition=class", f"--config.sampling.guidance_scale={scale}",
                    "--config.sampling.method=dpm_solver_pp", "--config.sampling.dpm_solver_pp.num_steps=20",
                    f"--config.eval.num_samples={DIGITS_N}", f"--config.eval.batch_size={DIGITS_N}"]
    if interval is not None:
      flags.append(f"--config.sampling.guidance_interval={interval[0]:g},{interval[1]:g}")
    seconds = run_main([f"--config={config}", f"--workdir={workdir}", "--mode=sample", f"--eval_folder={folder}",
                        *flags])
    path = sorted(glob.glob(os.path.join(workdir, folder, "class_step_*.json")), key=os.path.getmtime)[-1]
    with open(path) as f:
      m = json.load(f)
    out.append(dict(scale=scale, interval=_label(interval), nfe=m["nfe"], class_share=m["class_share"],
                    worst_class_share=min(v["share"] for v in m["per_class"].values()),
                    class_fid_over_floor=m["class_fid_over_floor"], sample_s=seconds))
    print(out[-1], flush=True)
  return out


def append_digits(rows: list[dict], name: str = "guidance_interval_gmm") -> None:
  """Adds the digits table to results/NAME.{json,md} written by ``write``."""
  with open(os.path.join(RESULTS, name + ".json")) as f:
    data = json.load(f)
  data["digits_rows"] = rows
  with open(os.path.join(RESULTS, name + ".json"), "w") as f:
    json.dump(data, f, indent=1)
  fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
  lines = ["", "## Digits: classifier-free guidance of a class-conditional VP network through main.py", "",
           f"`--digits`: `main.py --mode sample --config.sampling.condition=class --config.model.num_classes=10` on "
           f"configs/vp/digits.py's trained network (label dropout 0.1), {DIGITS_N} samples (50 per class), "
           "DPM-Solver++ 20 steps; interval via `--config.sampling.guidance_interval=lo,hi`. class_share: the share "
           "the digits FID classifier assigns to the requested class; worst_class_share: the lowest class's; "
           "class_fid_over_floor: per-class digits FID over its floor, averaged over classes (as "
           "digits_class_conditional.md). sample_s: wall seconds of the main.py run.", "",
           "| " + " | ".join(DIGITS_COLUMNS) + " |", "|" + "---|" * len(DIGITS_COLUMNS)]
  lines += ["| " + " | ".join(fmt(r[c]) for c in DIGITS_COLUMNS) + " |" for r in rows]
  with open(os.path.join(RESULTS, name + ".md"), "a") as f:
    f.write("\n".join(lines) + "\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=8192)
  parser.add_argument("--digits", action="store_true", help="also the digits rows (trains a network if needed)")
  parser.add_argument("--digits-root", default=os.path.join(ROOT, "runs", "guidance_interval_digits"))
  args = parser.parse_args()
  digits = digits_rows(args.digits_root) if args.digits else None
  out, kept = rows(args.n)
  write("guidance_interval_gmm", "A guidance interval on the oracle: class A's modes under guidance", out,
        ["sde", "guidance", "scale", "interval", "nfe", "tv", "tv_floor", "tv_over_floor", "small_mode_share",
         "mean_err", "mean_floor", "std_err", "std_floor", "off_class", "seconds"],
        f"`python -m benchmarks.conditional.guidance_interval_gmm --n {args.n}`: the 1-D two-class mixture of the "
        "script's docstring (class A: N(-4, 0.5^2) and N(+1, 0.4^2), within-class weights 0.7 / 0.3), exact "
        "scores; DPM-Solver++ 20 steps (21 NFE). interval: the noise levels sigma(t) = s(t)/a(t) where the scale "
        "applies (Kynkaanniemi et al. 2024), the conditional score (w = 1) elsewhere; everywhere = no "
        "interval. tv: total variation of A's within-class mode weights (each sample to A's nearest mode) against "
        "the exact 0.7 / 0.3; small_mode_share: the share at A's mode at +1 (exact 0.3); mean_err / std_err: the "
        "worst mode-mean error (in mode stds) and |std ratio - 1|; *_floor: 99% quantile over 200 exact class-A "
        f"samples of the same size (n = {args.n}); off_class: share nearer a class-B mode. Scale 1 samples p(x | A) "
        "exactly, so the error of a scale > 1 row is guidance's. seconds include compilation. Figure: "
        "docs/guidance_interval_gmm.png.")
  if digits:
    append_digits(digits)
  picture(kept, args.n)


if __name__ == "__main__":
  main()
