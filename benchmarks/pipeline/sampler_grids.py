"""Sample grids of the digits VP model: every sampler at 5, 10, 20 and 35 NFE and at a reference setting.

Loads the final EMA parameters of a VP digits run (``--workdir``, default runs/thr_vp1200: configs/vp/digits.py
at its default recipe, 1,200 steps; trained here with ``main.py --mode train`` when the workdir has no
checkpoint, ~7 min on 2 CPU cores) and draws ``--n`` digits per cell from the SAME prior draws (one key for
every cell, and every sampler draws x(T) from it the same way: ``samplers.steps.prior_draw``). Rows:

  - PC Euler-Maruyama on the reverse SDE (no corrector), budget - 1 steps + the denoising step; reference 500 steps;
  - the probability-flow ODE by Euler steps (PC Euler-Maruyama with noise_scale 0), as above; reference: the
    adaptive ODE (diffrax tsit5, rtol = atol = 1e-5);
  - EDM's Heun (Karras et al. 2022, Alg. 1, deterministic), DPM-Solver++(2M) and UniPC-bh2 with ``nfe=`` the
    budget, static thresholding to [-1, 1] (the image configs' default) as in digits_flow.md; reference 100 NFE;
  - the adaptive reverse-SDE sampler (Jolicoeur-Martineau et al. 2021, Alg. 1), which cannot be given a budget:
    its columns are tolerances rtol = 0.5, 0.2, 0.1, 0.05 and the paper's 0.01 (atol 0.0078), its NFE measured.

Every cell is labelled with the NFE the sampler returned (``sample_fn(key, score_fn) -> (x, nfe)``); the NFEs
go to benchmarks/results/sampler_grids.{md,json}. The picture: docs/img/sampler_grid_digits.png.

    python -m benchmarks.pipeline.sampler_grids [--workdir runs/thr_vp1200] [--n 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import ROOT, run_main, write

CONFIG = "configs/vp/digits.py"
BUDGETS = (5, 10, 20, 35)
COLUMNS = [f"{b} NFE" for b in BUDGETS] + ["reference"]
ADAPTIVE_RTOLS = (0.5, 0.2, 0.1, 0.05, 0.01)        # one per column; 0.01 is the paper's (Sec. 3)
REFERENCE_NFE = 100
IMG = os.path.join(ROOT, "docs", "img")



def save_grey_png(fig, path: str) -> None:
  """Writes a matplotlib figure to ``path`` as an optimised greyscale PNG (a third of the RGBA size) and closes it."""
  import io

  import matplotlib.pyplot as plt
  from PIL import Image
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.open(buffer).convert("L").save(path, optimize=True)

def _pc(steps: int, eta: float) -> tuple[str, dict]:
  return "pc", dict(predictor="euler_maruyama", corrector="none", num_steps=steps, noise_scale=eta)


# row label -> [(method, overrides) for each column of COLUMNS]
ROWS = {
    "PC Euler-Maruyama (reverse SDE)": [_pc(b - 1, 1.0) for b in BUDGETS] + [_pc(500, 1.0)],
    "probability-flow ODE (Euler; ref. tsit5 1e-5)": [_pc(b - 1, 0.0) for b in BUDGETS]
                                                      + [("ode", dict(solver="tsit5", rtol=1e-5, atol=1e-5))],
    "EDM Heun (deterministic)": [("edm_heun", dict(s_churn=0.0, nfe=b)) for b in BUDGETS + (REFERENCE_NFE,)],
    "DPM-Solver++(2M)": [("dpm_solver_pp", dict(nfe=b)) for b in BUDGETS + (REFERENCE_NFE,)],
    "UniPC-bh2": [("unipc", dict(nfe=b)) for b in BUDGETS + (REFERENCE_NFE,)],
    "SDE adaptive (rtol per column)": [("sde_adaptive", dict(rtol=r)) for r in ADAPTIVE_RTOLS],
}


def load_config():
  from schema import load_config_file

  return load_config_file(os.path.join(ROOT, CONFIG))


def ensure_trained(workdir: str) -> None:
  """Trains configs/vp/digits.py at its default recipe into ``workdir`` when it holds no checkpoint."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    print(f"no checkpoint in {workdir}: training {CONFIG} (default recipe)", flush=True)
    run_main([f"--config={CONFIG}", f"--workdir={workdir}", "--mode=train"])


def load_model(workdir: str):
  """(run Setup, EMA parameters, step) of the newest checkpoint of a VP digits workdir (trained if missing)."""
  from training.train import evaluation_state, setup

  ensure_trained(workdir)
  run = setup(load_config())
  state = evaluation_state(run, workdir)
  return run, state.ema_params, int(state.step)


def config_options(method: str, **overrides):
  """The options object of ``method`` as configs/vp/digits.py sets it (e.g. static thresholding for the
  data-prediction samplers), with ``overrides``."""
  import samplers
  from schema import as_config, sampler_options

  config = load_config()
  config.sampling.method = method
  _, options = sampler_options(as_config(config))
  return samplers.get_options(method, options, **overrides)


def draw(run, params, method: str, overrides: dict, n: int, seed: int):
  """(x [n, 8, 8, 1], nfe, seconds with compilation) of one cell, prior draws from key(seed)."""
  import jax

  import samplers

  sampler = samplers.get_sampler(run.sde, (n,) + run.data_shape, method, config_options(method, **overrides))
  fn = jax.jit(lambda key, p: sampler(key, run.score_fn(p)))
  t0 = time.perf_counter()
  x, nfe = fn(jax.random.key(seed), params)
  x = np.asarray(x)
  return x, int(nfe), time.perf_counter() - t0


def tile(x: np.ndarray, cols: int = 4, gap: int = 1) -> np.ndarray:
  """Images [N, H, W, 1] in model space [-1, 1] as one grey array in [0, 1], ``cols`` wide, 1 px white gaps."""
  from evaluation.pixels import to_unit_range

  x = np.asarray(to_unit_range(x, True))[..., 0]
  n, h, w = x.shape
  rows = -(-n // cols)
  out = np.ones((rows * (h + gap) + gap, cols * (w + gap) + gap), np.float32)
  for i, img in enumerate(x):
    r, c = divmod(i, cols)
    out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = img
  return out


def picture(cells: dict, rows: list[str], caption: str, path: str) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(1.55 * len(COLUMNS) + 1.6, 1.7 * len(rows) + 0.9),
                           dpi=80, squeeze=False)
  for i, row in enumerate(rows):
    for j, column in enumerate(COLUMNS):
      ax = axes[i, j]
      x, nfe, label = cells[(row, column)]
      ax.imshow(tile(x), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"NFE {nfe}" if label.startswith("nfe=") else f"{label}\nNFE {nfe}", fontsize=7.5, pad=2)
      if j == 0:
        ax.set_ylabel(row.replace(" (", "\n("), fontsize=8)
  fig.suptitle("Digits VP model: every sampler from the same prior draws, by NFE", fontsize=10)
  fig.text(0.01, 0.005, caption, fontsize=6.5, wrap=True, va="bottom")
  fig.tight_layout(rect=(0, 0.05, 1, 0.97))
  save_grey_png(fig, path)
  return path


def cell_label(method: str, overrides: dict) -> str:
  if method == "pc":
    return f"{overrides['num_steps']} steps + denoise"
  if method == "ode":
    return f"tsit5 rtol {overrides['rtol']:g}"
  if method == "sde_adaptive":
    return f"rtol {overrides['rtol']:g}"
  return f"nfe={overrides['nfe']}"


def main():
  from benchmarks.common import commit

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "thr_vp1200"))
  parser.add_argument("--n", type=int, default=16, help="digits per cell (a 4-wide grid)")
  parser.add_argument("--seed", type=int, default=0, help="the prior key of every cell")
  parser.add_argument("--out", default=os.path.join(IMG, "sampler_grid_digits.png"))
  args = parser.parse_args()

  run, params, step = load_model(args.workdir)
  cells, results = {}, []
  for row, settings in ROWS.items():
    for column, (method, overrides) in zip(COLUMNS, settings):
      x, nfe, seconds = draw(run, params, method, overrides, args.n, args.seed)
      label = cell_label(method, overrides)
      cells[(row, column)] = (x, nfe, label)
      results.append(dict(sampler=row, column=column, method=method, setting=label, nfe=nfe,
                          max_abs=float(np.abs(x).max()), finite=bool(np.isfinite(x).all()), seconds=round(seconds, 1)))
      print(results[-1], flush=True)

  workdir = os.path.relpath(os.path.abspath(args.workdir), ROOT)
  command = "python -m benchmarks.pipeline.sampler_grids"
  command += f" --workdir {workdir}" if workdir != "runs/thr_vp1200" else ""
  caption = (f"{args.n} digits per cell, prior key {args.seed} for every cell; EMA parameters of {workdir} "
             f"(configs/vp/digits.py, step {step}). `{command}` at {commit()}; NFEs in "
             "benchmarks/results/sampler_grids.json.")
  path = picture(cells, list(ROWS), caption, args.out)
  notes = (f"`{command}`: the final EMA parameters of {workdir} (configs/vp/digits.py, step {step}); {args.n} digits "
           f"per cell from the prior key {args.seed}, the same prior draws in every cell. Picture: "
           f"{os.path.relpath(path, ROOT)}. nfe: the evaluations the sampler returned (sample_fn -> (x, nfe)); "
           "setting: the step count, budget or tolerance asked. EDM Heun, DPM-Solver++ and UniPC use the config's "
           "static thresholding to [-1, 1] (hence max_abs 1); the reference column is PC with 500 steps, the "
           f"adaptive ODE (tsit5, rtol = atol = 1e-5), {REFERENCE_NFE} NFE for the fast methods and the paper's "
           "tolerance for the adaptive SDE sampler. seconds: compilation plus one run of the cell, on 2 CPU cores "
           "shared with other jobs (indicative only). These are pictures, not a quality measure: digits FID by "
           "NFE is in digits_flow.md and docs/img/nfe_quality_digits.png.")
  print(write("sampler_grids", "Sample grids of the digits VP model per sampler and NFE", results,
              ["sampler", "column", "method", "setting", "nfe", "max_abs", "finite", "seconds"], notes))
  print(f"{caption}\nwrote {path} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
  main()
