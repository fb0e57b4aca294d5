"""Figures drawn from the committed results (no model runs): quality against NFE, and the inverse-problem montage.

  - docs/img/nfe_quality_digits.png: digits FID over its floor against NFE, from results/digits_flow.json (VP and
    rectified flow, every fast sampler at 5-35 NFE, the converged ODE and PC) and results/digits_samplers.json
    (every sampler on the VE, VP and sub-VP digits models of that benchmark, at their config NFE);
  - docs/img/nfe_quality_gmm.png: the Gaussian-mixture oracle (2-D) for VE, VP and sub-VP: mode-weight TV over its
    floor against NFE for every sampler (results/samplers_gmm.json) and the fast samplers' spread bias
    (results/fast_samplers_gmm.json);
  - docs/img/inverse_digits.png: the VP digits inverse-problem pictures docs/digits_vp_inverse_*.png
    (benchmarks/conditional/digits_inverse.py) side by side, rows = problem, columns = algorithm.

Rows measured before a behaviour change are drawn hollow and named in the footnote: DPM-Solver++ with N >= 10
steps before a4ddca0 (from then its lower_order_final keeps the order in the last steps), and the fast samplers
of digits_samplers.json rows that ran before a4ddca0 made the image configs clip x0 to [-1, 1]. Rows of
digits_flow.json named "thresholding none" (an earlier run without thresholding, if any) are left out.
Each figure's caption (what, which results file, the commit its rows name) is printed and drawn as its footnote.

    python -m benchmarks.plots [--only digits gmm inverse]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
IMG = os.path.join(ROOT, "docs", "img")
CHANGE = "a4ddca0"       # thresholding in the image configs; DPM-Solver++'s lower_order_final only below 10 steps
COLORS = {"edm_heun": "C0", "dpm_solver_pp": "C1", "dpm++3m": "C5", "unipc": "C2", "pc_eta0": "C3", "pc": "C4",
          "ode": "C3", "ald": "C7", "pc_ancestral": "C8", "pc_langevin": "C9", "sde_adaptive": "C6"}


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def load(name: str) -> dict:
  with open(os.path.join(RESULTS, name + ".json")) as f:
    return json.load(f)


def committed_in(name: str) -> str:
  """The short hash of the last commit that changed results/NAME.json ("uncommitted" when none did)."""
  out = subprocess.run(["git", "log", "-1", "--format=%h", "--", f"benchmarks/results/{name}.json"], cwd=ROOT,
                       capture_output=True, text=True).stdout.strip()
  return out or "uncommitted"


def provenance(name: str, data: dict, rows=None) -> str:
  """'results/NAME.json (rows at <commits>; committed in <hash>)': the commits the rows (or the file) name."""
  stamps = sorted({r["commit"] for r in (rows or data["rows"]) if r.get("commit")}) or (
      [data["commit"]] if data.get("commit") else [])
  at = ", ".join(stamps) if stamps else "no commit stamp"
  return f"results/{name}.json (measured at {at}; committed in {committed_in(name)})"


def before_change(commit: str) -> bool:
  """Whether the commit a row names is an ancestor of CHANGE (so the row predates it)."""
  head = commit.split()[0] if commit else ""
  if not head:
    return False
  return subprocess.run(["git", "merge-base", "--is-ancestor", head, CHANGE], cwd=ROOT,
                        capture_output=True).returncode == 0


def _footnote(fig, text: str, bottom: float) -> None:
  fig.text(0.005, 0.005, text, fontsize=7, wrap=True, va="bottom", ha="left")
  fig.tight_layout(rect=(0, bottom, 1, 0.95))


def _save(fig, path: str) -> str:
  """Saves ``fig`` as a PNG of at most 128 colours (a fraction of the RGBA file's size, no visible change)."""
  import io

  from PIL import Image

  os.makedirs(os.path.dirname(path), exist_ok=True)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  _plt().close(fig)
  Image.open(buffer).convert("RGB").quantize(colors=128).save(path, optimize=True)
  print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) // 1024} KB)")
  return path


def _quality_axes(ax, ylabel: str, floor: bool = True, yticks=None):
  ax.set_xscale("log")
  ax.set_yscale("log")
  if yticks is not None:
    ax.set_yticks(yticks, [f"{v:g}" for v in yticks])
    ax.minorticks_off()
  ax.set_xlabel("NFE (score evaluations per sample)")
  ax.set_ylabel(ylabel)
  if floor:
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
  ax.grid(True, which="major", alpha=0.3)


# --- digits -------------------------------------------------------------------------------------------------

FLOW_LINES = {"edm_heun deterministic": ("EDM Heun (deterministic)", "edm_heun", "o"),
              "dpm_solver_pp": ("DPM-Solver++(2M)", "dpm_solver_pp", "s"),
              "unipc": ("UniPC-bh2", "unipc", "^")}
FLOW_POINTS = {"pc euler_maruyama eta=0 (probability flow)": ("PC Euler, probability flow (eta 0)", "pc_eta0", "v"),
               "pc euler_maruyama eta=1 (reverse SDE)": ("PC Euler-Maruyama, reverse SDE", "pc", "P"),
               "edm_heun stochastic S_churn=40": ("EDM Heun S_churn=40 (VP config default)", "edm_heun", "X"),
               "converged: ode tsit5 rtol=atol=1e-5": ("converged: ODE tsit5 1e-5", "ode", "D"),
               "converged: pc euler_maruyama 500 steps (reverse SDE)": ("converged: PC 500 steps", "pc", "*")}


def _flow_panel(ax, rows: list[dict], process: str) -> None:
  mine = [r for r in rows if r["process"] == process and "thresholding none" not in r["sampler"]]
  for sampler, (label, color, marker) in FLOW_LINES.items():
    main = sorted((r for r in mine if r["sampler"] == sampler and r["seed"] == 42), key=lambda r: r["nfe"])
    ax.plot([r["nfe"] for r in main], [r["fid_over_floor"] for r in main], marker=marker, color=COLORS[color],
            label=label, ms=5)
  for sampler, (label, color, marker) in FLOW_POINTS.items():
    main = [r for r in mine if r["sampler"] == sampler and r["seed"] == 42]
    ax.plot([r["nfe"] for r in main], [r["fid_over_floor"] for r in main], ls="none", marker=marker,
            color=COLORS[color], label=label, ms=7)
  other = [r for r in mine if r["seed"] != 42]
  ax.plot([r["nfe"] for r in other], [r["fid_over_floor"] for r in other], ls="none", marker=".", color="0.45",
          label="the same samplers, sampling seed 0", ms=5)
  _quality_axes(ax, "digits FID / floor (500 samples)", yticks=(1, 1.5, 2, 3, 5, 10, 20, 50))
  ax.set_title(f"{process} digits model (digits_flow.json, seed 42)", fontsize=9)


SAMPLER_FAMILIES = [  # prefix of digits_samplers.json's sampler -> (label, marker)
    ("pc (", ("PC, config predictor/corrector", "o")), ("pc probability_flow", ("PC probability flow", "v")),
    ("ode", ("ODE tsit5 1e-5", "D")), ("edm_heun stochastic", ("EDM Heun S_churn=40", "X")),
    ("edm_heun", ("EDM Heun N=18", "P")), ("dpm_solver_pp", ("DPM-Solver++", "s")), ("unipc", ("UniPC", "^")),
    ("ald", ("ALD 10x100", "*"))]
SDE_COLORS = {"VE": "C0", "VP": "C1", "sub-VP": "C2"}


def _family(sampler: str):
  return next(v for prefix, v in SAMPLER_FAMILIES if sampler.startswith(prefix))


def _samplers_panel(ax, rows: list[dict]) -> None:
  from matplotlib.lines import Line2D

  for r in rows:
    label, marker = _family(r["sampler"])
    hollow = r["sampler"].startswith("dpm_solver_pp") and before_change(r.get("commit", ""))
    color = SDE_COLORS[r["sde"]]
    ax.plot([r["nfe"]], [r["fid_over_floor"]], marker=marker, ms=7, ls="none", color=color,
            markerfacecolor="none" if hollow else color)
  handles = [Line2D([], [], color=c, marker="o", ls="none", label=s) for s, c in SDE_COLORS.items()]
  handles += [Line2D([], [], color="0.3", marker=m, ls="none", label=l) for _, (l, m) in SAMPLER_FAMILIES]
  handles.append(Line2D([], [], color="0.3", marker="s", markerfacecolor="none", ls="none",
                        label=f"DPM-Solver++ N>=10 before {CHANGE}"))
  ax.legend(handles=handles, fontsize=6.5, loc="upper center", ncol=2)
  _quality_axes(ax, "digits FID / floor (500 samples)", yticks=(1, 1.5, 2, 3, 4))
  ax.set_ylim(0.8, 5.0)
  ax.set_title("VE, VP, sub-VP digits models (digits_samplers.json)", fontsize=9)


def nfe_quality_digits(path: str = os.path.join(IMG, "nfe_quality_digits.png")) -> str:
  plt = _plt()
  flow, samp = load("digits_flow"), load("digits_samplers")
  fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), dpi=80)
  axes[1].sharey(axes[0])
  _flow_panel(axes[0], flow["rows"], "VP")
  _flow_panel(axes[1], flow["rows"], "rectified flow")
  axes[0].legend(fontsize=6.5, loc="upper right")
  _samplers_panel(axes[2], samp["rows"])
  for ax in axes:
    ax.axhline(3.0, color="k", lw=0.6, ls=":")
  fig.suptitle("Digits: sample quality against score evaluations (digits FID over the train-vs-test floor; "
               "dashed: the floor, dotted: 3x)", fontsize=10)
  before = sorted({r["sde"] for r in samp["rows"] if before_change(r.get("commit", ""))})
  caption = ("Digits FID (classifier features, 500 samples vs the 297 test digits) over its train-vs-test floor, "
             "log-log. Left, middle: VP and rectified flow, the same network and 1,200 training steps, fast samplers "
             "with static thresholding to [-1, 1], from " + provenance("digits_flow", flow) + ", "
             "`python -m benchmarks.pipeline.digits_flow --seeds 0 --seed_nfes 20 35`; rows named 'thresholding "
             "none', if any, are left out; grey dots: the same samplers with sampling seed 0, for the seed-to-seed "
             "spread. Right: " + provenance("digits_samplers", samp) + ", `python -m benchmarks.pipeline.digits` "
             "(models of that benchmark: digits_samplers.md); "
             + (f"the {', '.join(before)} rows predate {CHANGE}, so their fast samplers ran without thresholding, "
                "and DPM-Solver++ with N >= 10 steps (hollow) before its lower_order_final change."
                if before else f"every row ran after {CHANGE} (fast samplers with static thresholding)."))
  print("nfe_quality_digits.png:", caption)
  _footnote(fig, caption, 0.13)
  return _save(fig, path)


# --- Gaussian-mixture oracle --------------------------------------------------------------------------------

GMM_FAMILIES = {"pc rd+langevin": ("PC reverse diffusion + Langevin", "pc_langevin", "o"),
                "pc euler_maruyama": ("PC Euler-Maruyama", "pc", "P"),
                "pc ancestral": ("PC ancestral", "pc_ancestral", "h"),
                "ode tsit5": ("ODE tsit5 (rtol 1e-2, 1e-3, 1e-5)", "ode", "D"),
                "edm_heun": ("EDM Heun", "edm_heun", "o"),
                "dpm_solver_pp": ("DPM-Solver++(2M)", "dpm_solver_pp", "s"),
                "ald": ("annealed Langevin (10, 100 levels)", "ald", "*")}
FAST = {"edm_heun": ("EDM Heun", "edm_heun", "o", "edm"), "dpm++2m": ("DPM-Solver++(2M)", "dpm_solver_pp", "s", "edm"),
        "dpm++3m": ("DPM-Solver++(3M)", "dpm++3m", "v", "edm"),
        "unipc2": ("UniPC-bh2 (order 2)", "unipc", "^", "logsnr")}
GMM_SDES = (("VE", "ve"), ("VP", "vp"), ("sub-VP", "subvp"))


def _dpm_before(steps: int, commit: str) -> bool:
  """DPM-Solver++ rows with N >= 10 steps measured before CHANGE changed its last steps' orders."""
  return steps >= 10 and before_change(commit)


def nfe_quality_gmm(path: str = os.path.join(IMG, "nfe_quality_gmm.png"), dim: int = 2) -> str:
  plt = _plt()
  slow, fast = load("samplers_gmm"), load("fast_samplers_gmm")
  slow_commit = slow.get("commit") or committed_in("samplers_gmm")
  fig, axes = plt.subplots(2, 3, figsize=(15, 9), dpi=80)
  for j, (sde, key) in enumerate(GMM_SDES):
    ax = axes[0, j]
    rows = [r for r in slow["rows"] if r["sde"] == sde and r["D"] == dim]
    for family, (label, color, marker) in GMM_FAMILIES.items():
      mine = sorted((r for r in rows if r["sampler"].split(" (")[0] == family), key=lambda r: r["nfe"])
      xs, ys = [r["nfe"] for r in mine], [r["sw_x_floor"] for r in mine]
      ax.plot(xs, ys, color=COLORS[color], label=label, lw=1)
      for r, x, y in zip(mine, xs, ys):
        hollow = family == "dpm_solver_pp" and _dpm_before(int(r["sampler"].split("N=")[1].rstrip(")")), slow_commit)
        ax.plot([x], [y], marker=marker, color=COLORS[color], markerfacecolor="none" if hollow else COLORS[color],
                ms=5)
    _quality_axes(ax, "sliced Wasserstein / floor")
    ax.set_title(f"{sde}: every sampler (samplers_gmm.json)", fontsize=9)
    ax = axes[1, j]
    rows = [r for r in fast["rows"] if r["sde"] == key and r["D"] == dim]
    for sampler, (label, color, marker, grid) in FAST.items():
      for g, ls in ((grid, "-"), ("fitted", "--")):
        mine = sorted((r for r in rows if r["sampler"] == sampler and r["grid"] == g), key=lambda r: r["nfe"])
        xs, ys = [r["nfe"] for r in mine], [r["spread_bias"] for r in mine]
        ax.plot(xs, ys, color=COLORS[color], ls=ls, lw=1, label=f"{label}, {g} grid")
        for r, x, y in zip(mine, xs, ys):
          hollow = sampler.startswith("dpm") and _dpm_before(r["nfe"] - 1, fast["commit"])
          ax.plot([x], [y], marker=marker, color=COLORS[color], markerfacecolor="none" if hollow else COLORS[color],
                  ms=5)
    _quality_axes(ax, "spread bias |std / std_ref - 1| (worst mode)", floor=False)
    nfes = sorted({r["nfe"] for r in rows})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    for nfe, tol in ((10, 0.10), (20, 0.05)):
      ax.plot([nfe], [tol], marker="_", color="k", ms=14, mew=2)
    ax.set_title(f"{sde}: fast samplers' discretisation error (fast_samplers_gmm.json)", fontsize=9)
  axes[0, 0].legend(fontsize=6.5, loc="upper right")
  axes[1, 0].legend(fontsize=6.5, loc="lower left", ncol=2)
  fig.suptitle(f"The {dim}-D Gaussian-mixture oracle (exact score): error against NFE, VE / VP / sub-VP", fontsize=10)
  caption = (f"Top: sliced Wasserstein distance of n = 8192 samples to an independent exact sample, over the same "
             f"distance between two exact samples (dashed: 1; the floor row is the median of 20 exact samples), "
             f"from results/samplers_gmm.json (no commit stamp in the file; committed in "
             f"{committed_in('samplers_gmm')}), `python benchmarks/samplers_gmm.py` at that time. Bottom: the worst "
             "spread error against a converged solve of the same prior draws (discretisation error only; black "
             "ticks: issue 12's targets, 10% at 10 NFE, 5% at 20), solid on each method's default grid, dashed on "
             "the fitted grid, from " + provenance("fast_samplers_gmm", fast) + ", `python -m benchmarks.samplers."
             "fast_samplers_gmm`. Hollow: DPM-Solver++ with N >= 10 steps measured before " + CHANGE + " changed its "
             "last steps' orders (lower_order_final).")
  print("nfe_quality_gmm.png:", caption)
  _footnote(fig, caption, 0.08)
  return _save(fig, path)


# --- inverse problems ---------------------------------------------------------------------------------------

PROBLEMS = (("superres", "x2 super-resolution"), ("blur", "Gaussian blur"), ("inpaint", "box inpainting"))
ALGORITHMS = ("replacement", "smc16", "smc2", "ddrm", "pigdm", "dps")
# digits_inverse.py's strips: 8x8 digits magnified 4x with 4 px gaps; rows observed | solution | truth
TILE, PAD = 32, 4


def _strip_row(image: np.ndarray, row: int, count: int) -> np.ndarray:
  """The first ``count`` digits of picture row ``row`` (0 observed, 1 solutions, 2 truth) as [count, 32, 32].

  Raises:
    ValueError: the picture is not 3 rows of 32 px digits with 4 px gaps (digits_inverse.py changed its layout).
  """
  height, width = image.shape
  if height != 3 * (TILE + PAD) + PAD or (width - PAD) % (TILE + PAD):
    raise ValueError(f"inverse picture of {width}x{height} px is not 3 rows of {TILE} px digits with {PAD} px gaps")
  top = PAD + row * (TILE + PAD)
  return np.stack([image[top:top + TILE, PAD + i * (TILE + PAD):PAD + i * (TILE + PAD) + TILE] for i in range(count)])


def _block(digits: np.ndarray, cols: int) -> np.ndarray:
  """[n, 32, 32] digits tiled ``cols`` wide with 2 px white gaps."""
  n, h, w = digits.shape
  rows = -(-n // cols)
  gap = 2
  out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), 255, np.uint8)
  for i, d in enumerate(digits):
    r, c = divmod(i, cols)
    out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = d
  return out


def inverse_digits(path: str = os.path.join(IMG, "inverse_digits.png"), sde: str = "vp", count: int = 8,
                   cols: int = 4) -> str:
  from PIL import Image

  plt = _plt()
  data = load("digits_inverse")
  by_picture = {r["picture"]: r for r in data["rows"] if r.get("picture")}
  columns = ["observed"] + list(ALGORITHMS) + ["truth"]
  fig, axes = plt.subplots(len(PROBLEMS), len(columns), figsize=(1.55 * len(columns) + 0.8, 1.25 * len(PROBLEMS) + 1.2),
                           dpi=80, squeeze=False)
  used = []
  for i, (problem, problem_label) in enumerate(PROBLEMS):
    pictures = {a: f"docs/digits_{sde}_inverse_{problem}_{a}.png" for a in ALGORITHMS}
    present = {a: p for a, p in pictures.items() if os.path.exists(os.path.join(ROOT, p))}
    first = np.asarray(Image.open(os.path.join(ROOT, next(iter(present.values())))).convert("L"))
    for j, column in enumerate(columns):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if column in ("observed", "truth"):
        ax.imshow(_block(_strip_row(first, 0 if column == "observed" else 2, count), cols), cmap="gray", vmin=0,
                  vmax=255, interpolation="nearest")
        observed = "observed y" if problem == "blur" else "observed (A+ y)"         # digits_inverse.md's top row
        ax.set_title(column if column == "truth" else observed, fontsize=7.5, pad=2)
      elif column in present:
        image = np.asarray(Image.open(os.path.join(ROOT, present[column])).convert("L"))
        ax.imshow(_block(_strip_row(image, 1, count), cols), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        r = by_picture.get(present[column])
        used.append(present[column])
        title = r["algorithm"].split(" (")[0].replace("PiGDM", "ΠGDM") if r else column
        numbers = f"\nNFE {r['nfe']}, {r['psnr']:.1f} dB, label {r['label_agreement']:.2f}" if r else ""
        ax.set_title(title + numbers, fontsize=6.5, pad=2)
      else:
        ax.text(0.5, 0.5, "noise-free\nproblems only", ha="center", va="center", fontsize=7, color="0.4")
      if j == 0:
        ax.set_ylabel(problem_label, fontsize=8)
  rows = [by_picture[p] for p in used if p in by_picture]
  caption = (f"The first {count} of 100 test digits per problem, {sde.upper()} digits model (2,000 steps): the "
             "observation, one solution per algorithm (all see the same y) and the truth. Pictures "
             f"docs/digits_{sde}_inverse_*.png and numbers (NFE per image, PSNR in dB, share of solutions the "
             "digits classifier gives the true label, over all 100) from " + provenance("digits_inverse", data, rows)
             + ", `python -m benchmarks.conditional.digits_inverse`. Noise: blur 0.01, inpainting 0.05 (model units).")
  fig.suptitle("Inverse problems on digits: rows = problem, columns = algorithm", fontsize=10)
  print("inverse_digits.png:", caption)
  _footnote(fig, caption, 0.1)
  return _save(fig, path)


FIGURES = {"digits": nfe_quality_digits, "gmm": nfe_quality_gmm, "inverse": inverse_digits}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="*", default=list(FIGURES), choices=list(FIGURES))
  args = parser.parse_args()
  for name in args.only:
    FIGURES[name]()


if __name__ == "__main__":
  main()
