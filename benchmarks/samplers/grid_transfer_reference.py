"""What a converged solver reaches on the held-out family: the ceiling for grid_transfer's targets.

grid_transfer scores every fast sampler against two things: the mixture itself (mode-weight TV over the floor of
exact samples, std_err) and a converged solve of the same prior draws (spread_bias). This script asks how close
the converged solve itself gets to the mixture, for each held-out mixture (``data_lib.heldout``, the same seed,
draws and keys as grid_transfer) and SDE, started from

* the prior, as every sampler starts: x_hat(T) ~ N(0, (prior std / a(T))^2) (key 3, grid_transfer's draws);
* exact p_T: x_hat(T) = x_0 + sigma_hi * eps with x_0 drawn from the mixture (key 4), which the prior
  approximates (x_hat = x / a(T), so in x_hat every SDE adds noise of std sigma(T) / a(T) = sigma_hi).

The solve is ``samplers.fit_grid.reference_solve``: DPM-Solver++(2M) on 500 log-SNR steps from sigma_hi to
sigma_lo = 0.01 with the mixture's exact denoiser, then the final denoising. A mode-weight TV above 1.5x the floor
from the prior but not from exact p_T is the prior mismatch (p_T is not the prior), which no time grid removes.

    python -m benchmarks.samplers.grid_transfer_reference [--n 8192]
"""

from __future__ import annotations

import argparse

import jax

from benchmarks.common import write
from benchmarks.samplers.grid_transfer import SDE_NAMES, SDES, ranges
from data_lib import heldout
from samplers import fit_grid


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=8192, help="draws per case (grid_transfer's --n)")
  parser.add_argument("--seed", type=int, default=heldout.HELDOUT_SEED, help="the family's seed")
  args = parser.parse_args()
  rows = []
  for name, mixture in heldout.heldout_mixtures(args.seed, per_dim=2, dims=heldout.DIMS):
    floor = mixture.metric_floor(jax.random.key(123), args.n)               # grid_transfer's floor
    denoise = heldout.mixture_denoiser(mixture)
    for sde_name, sde in SDES.items():
      hi, lo, std = ranges(sde)
      starts = {"prior": std * jax.random.normal(jax.random.key(3), (args.n, mixture.dim)),
                "exact p_T": mixture.sample(jax.random.key(4), args.n)
                + hi * jax.random.normal(jax.random.key(5), (args.n, mixture.dim))}
      for start, x_hat in starts.items():
        m = mixture.mode_metrics(fit_grid.reference_solve(denoise, x_hat, hi, lo))
        rows.append(dict(mixture=name, D=mixture.dim, sde=SDE_NAMES[sde_name], sigma_hi=hi, start=start,
                         tv_x_floor=m["tv"] / floor["tv"], mean_err_x_floor=m["mean_err"] / floor["mean_err"],
                         std_err=m["std_err"], std_err_floor=floor["std_err"],
                         within_tv_target=bool(m["tv"] / floor["tv"] <= 1.5)))
        print(rows[-1], flush=True)
  notes = ("`python -m benchmarks.samplers.grid_transfer_reference`: " + " ".join(
      __doc__.split("\n\n")[1:4]).replace("\n", " ") + f" n = {args.n}. Floors: q99 over 200 exact samples of n "
      "(grid_transfer's). within_tv_target: tv_x_floor <= 1.5, grid_transfer's TV target.")
  print(write("grid_transfer_reference", "The converged solve on the held-out family: from the prior and from exact "
              "p_T", rows, ["mixture", "D", "sde", "sigma_hi", "start", "tv_x_floor", "mean_err_x_floor", "std_err",
                            "std_err_floor", "within_tv_target"], notes))


if __name__ == "__main__":
  main()
