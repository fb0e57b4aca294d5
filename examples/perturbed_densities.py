"""Draws the exact perturbed densities p_t of a 2-D Gaussian mixture under VE, VP and sub-VP.

One row per SDE, one column per time t; the colour is log p_t (nats), the arrows the exact score
grad log p_t (direction only). Everything comes from the oracle ``data_lib.gmm``.

    python examples/perturbed_densities.py --out outputs/perturbed_densities.png
"""

from __future__ import annotations

import argparse
import os
import sys

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sde_lib  # noqa: E402
from data_lib import example_mixture  # noqa: E402

TIMES = (0.0, 0.05, 0.2, 0.5, 1.0)


def main(out: str, grid: int = 160) -> None:
  mixture = example_mixture(2)
  sdes = {"VE": sde_lib.VESDE(), "VP": sde_lib.VPSDE(), "sub-VP": sde_lib.subVPSDE()}
  fig, axes = plt.subplots(len(sdes), len(TIMES), figsize=(3.1 * len(TIMES), 3.0 * len(sdes)))
  for row, (name, sde) in enumerate(sdes.items()):
    for col, t in enumerate(TIMES):
      ax = axes[row, col]
      a, s = (float(v[0]) for v in sde.marginal_coefs(jnp.array([t])))
      half = a * 5.5 + 3.0 * s                     # the data's extent, shrunk by a(t), plus 3 noise stds
      u = jnp.linspace(-half, half, grid)
      xx, yy = jnp.meshgrid(u, u)
      pts = jnp.stack([xx.ravel(), yy.ravel()], axis=1)
      logp = mixture.log_prob_perturbed(pts, a, s).reshape(grid, grid)
      ax.imshow(jnp.maximum(logp, logp.max() - 12.0), origin="lower", extent=(-half, half, -half, half), cmap="magma")
      q = jnp.linspace(-half, half, 17)[1:-1]
      qx, qy = jnp.meshgrid(q, q)
      qp = jnp.stack([qx.ravel(), qy.ravel()], axis=1)
      score = mixture.score_perturbed(qp, a, s)
      score = score / (jnp.linalg.norm(score, axis=1, keepdims=True) + 1e-12)
      ax.quiver(qp[:, 0], qp[:, 1], score[:, 0], score[:, 1], color="white", alpha=0.75, scale=22, width=0.006)
      ax.set_title(f"{name}  t={t:g}  (a={a:.3g}, s={s:.3g})", fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle("Exact perturbed densities log p_t of a 4-mode mixture (weights .5/.25/.15/.10) and their scores")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=90)
  print(f"wrote {out}")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="outputs/perturbed_densities.png", help="PNG file to write")
  main(parser.parse_args().out)
