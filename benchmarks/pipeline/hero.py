"""The README's picture: digits diffused forward under the VP SDE, and new digits sampled back by the trained model.

Top: ``--n`` test digits x_0 at t = 0 ... 1 (``TIMES``, denser where the digit fades) under the exact VP
perturbation kernel x_t = a(t) x_0 + s(t) z (``sde.marginal_prob``; Song et al. 2021, eq. 29, as sde_lib/base.py
cites), one z per digit for every t.
Bottom: ``--n`` samples of the trained VP digits model (the EMA parameters of ``--workdir``, default
runs/thr_vp1200, trained by ``benchmarks.pipeline.sampler_grids.load_model`` if missing) along one run of the
reverse SDE (PC Euler-Maruyama, the config's 500 steps and the final denoising step), x_t recorded at every step
through ``samplers.run``'s callback and shown at the steps nearest the same times; t = 0 is the returned sample.

    python -m benchmarks.pipeline.hero [--workdir runs/thr_vp1200] [--n 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.common import ROOT, commit
from benchmarks.pipeline.sampler_grids import IMG, config_options, load_model, save_grey_png

# Denser at small t: under VP's linear beta (0.1 to 20) s(t) is already 0.32 at t = 0.1 and 0.8 at t = 0.3.
TIMES = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0])
STEPS = 500


def forward(run, x0: np.ndarray, key) -> np.ndarray:
  """x_t [len(TIMES), n, H, W, C] from the exact perturbation kernel, the same z for every t."""
  import jax
  import jax.numpy as jnp

  z = jax.random.normal(key, x0.shape)
  out = []
  for t in TIMES:
    mean, std = run.sde.marginal_prob(jnp.asarray(x0), jnp.full((x0.shape[0],), t))
    out.append(np.asarray(mean + std[:, None, None, None] * z))
  return np.stack(out)


def reverse(run, params, n: int, key) -> tuple[np.ndarray, int]:
  """(x_t [len(TIMES), n, H, W, C] at the steps nearest TIMES, the last the returned sample; nfe) of one PC
  Euler-Maruyama run of the reverse SDE."""
  import jax

  import samplers
  from samplers import common, steps

  stepper = samplers.get_stepper(run.sde, (n,) + run.data_shape, "pc",
                                 config_options("pc", predictor="euler_maruyama", corrector="none", num_steps=STEPS))
  seen = {}

  def record(k, x, t):
    seen[int(k)] = (float(t), np.asarray(x))

  def callback(k, x, t, denoised):
    jax.debug.callback(record, k, x, t, ordered=True)

  fn = jax.jit(lambda key, p: samplers.run(stepper, key, run.score_fn(p), callback=callback))
  x, nfe = fn(key, params)
  x = np.asarray(jax.block_until_ready(x))
  levels = sorted(seen)
  times = np.array([seen[k][0] for k in levels])
  snaps = [seen[levels[int(np.argmin(np.abs(times - t)))]][1] for t in TIMES[1:-1]]
  # t = 1 is level 0, the prior draw, which the callback does not see (it fires after each step)
  prior = steps.prior_draw(run.sde, (n,) + run.data_shape, common.per_sample_keys(key, n))
  snaps.append(np.asarray(prior))
  return np.stack([x] + snaps), int(nfe)


def strip(frames: np.ndarray, scale: int = 5, gap: int = 2) -> np.ndarray:
  """[T, n, H, W, 1] in model space -> one grey image in [0, 1]: n rows of T digits, white gaps."""
  x = np.clip((frames[..., 0] + 1.0) / 2.0, 0.0, 1.0)
  x = x.repeat(scale, axis=2).repeat(scale, axis=3)
  t, n, h, w = x.shape
  out = np.ones((n * (h + gap) + gap, t * (w + gap) + gap), np.float32)
  for i in range(t):
    for j in range(n):
      out[gap + j * (h + gap):gap + j * (h + gap) + h, gap + i * (w + gap):gap + i * (w + gap) + w] = x[i, j]
  return out


def picture(fwd: np.ndarray, rev: np.ndarray, nfe: int, caption: str, path: str) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  top, bottom = strip(fwd), strip(rev)
  width = top.shape[1]
  fig, axes = plt.subplots(2, 1, figsize=(9.6, 2 * 9.6 * top.shape[0] / width + 1.5), dpi=80)
  cell = width / len(TIMES)
  for ax, image, label in ((axes[0], top, "forward: x_t = a(t) x_0 + s(t) z, exact VP kernel  \u2192"),
                           (axes[1], bottom, f"\u2190  reverse SDE with the trained score (PC Euler-Maruyama, "
                                             f"{STEPS} steps, {nfe} NFE)")):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([])
    ax.set_xticks([cell * (i + 0.5) for i in range(len(TIMES))], [f"t = {t:g}" for t in TIMES], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
      spine.set_visible(False)
    ax.set_title(label, fontsize=9, pad=3)
  fig.text(0.005, 0.005, caption, fontsize=6, wrap=True, va="bottom")
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  save_grey_png(fig, path)
  return path


def main():
  import jax

  from data_lib.images import get_dataset

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "thr_vp1200"))
  parser.add_argument("--n", type=int, default=3, help="digits in each half")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(IMG, "hero.png"))
  args = parser.parse_args()

  run, params, step = load_model(args.workdir)
  x0 = get_dataset(run.config.data, "test", evaluation=True, seed=args.seed).batch(0, args.n)
  key = jax.random.key(args.seed)
  fwd = forward(run, x0, jax.random.fold_in(key, 0))
  rev, nfe = reverse(run, params, args.n, jax.random.fold_in(key, 1))
  workdir = os.path.relpath(os.path.abspath(args.workdir), ROOT)
  n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  caption = (f"Top: {args.n} test digits under the VP SDE's perturbation kernel (beta 0.1 to 20). Bottom: new digits "
             f"from the EMA parameters of {workdir} (configs/vp/digits.py, step {step}, {n_params:,} parameters), x_t "
             f"recorded by samplers.run's callback at the steps nearest each t. `python -m benchmarks.pipeline.hero` "
             f"at {commit()}.")
  path = picture(fwd, rev, nfe, caption, args.out)
  print(f"{caption}\nwrote {path} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
  main()
