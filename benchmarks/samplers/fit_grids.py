"""Fits the noise-level grids of the fast samplers to the oracle mixtures, once per SDE and data set.

For VE, VP and sub-VP and the 4-mode mixture in 2 and 16 dimensions (``example_mixture``), fits an
N-step grid for UniPC (bh2, order 2) at N = 9 and 19 (10 and 20 NFE with the final denoising) with
``samplers.fit_grid.fit_grid`` on 1024 prior draws from key 100 (the benchmarks evaluate on other
draws), driven by the exact score, and saves ``samplers/grids/<sde>_gmm<D>.json``; the samplers load
them as ``grid="fitted:<sde>_gmm<D>"`` (other step counts are log-linearly resampled).

    python -m benchmarks.samplers.fit_grids [--sdes ve vp subvp] [--dims 2 16] [--iters 300]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import sde_lib
from benchmarks.common import commit
from data_lib import example_mixture
from samplers import fit_grid, schedules

SDES = {"ve": sde_lib.VESDE, "vp": sde_lib.VPSDE, "subvp": sde_lib.subVPSDE}
METHOD, ORDER, STEPS, BATCH, DELTA = "unipc", 2, (9, 19), 1024, 0.03


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sdes", nargs="*", default=list(SDES), choices=list(SDES))
  parser.add_argument("--dims", nargs="*", type=int, default=[2, 16])
  parser.add_argument("--iters", type=int, default=250)
  args = parser.parse_args()
  for dim in args.dims:
    mixture = example_mixture(dim)
    for name in args.sdes:
      sde = SDES[name]()
      grids, losses = {}, {}
      for steps in STEPS:
        t0 = time.perf_counter()
        grids[steps], losses[str(steps)] = fit_grid.fit_grid(
            jax.random.key(100), sde, mixture.score_fn(sde), (BATCH, dim), steps, method=METHOD, order=ORDER,
            iters=args.iters, delta=DELTA)
        print(f"{name} D={dim} N={steps}: {losses[str(steps)]} ({time.perf_counter() - t0:.0f} s) "
              f"{np.round(grids[steps], 4).tolist()}", flush=True)
      path = os.path.join(schedules.GRID_DIR, f"{name}_gmm{dim}.json")
      fit_grid.save_grid(path, grids, sde=repr(sde), data=f"example_mixture({dim})", method=METHOD, order=ORDER,
                         lower_order_final=True, t_min=1e-3, sigma_floor=0.01, batch=BATCH, key=100,
                         iters=args.iters, delta=DELTA, objective=fit_grid.OBJECTIVE, losses=losses,
                         command="python -m benchmarks.samplers.fit_grids", commit=commit())


if __name__ == "__main__":
  main()
