"""Do time grids transfer? The fast samplers at exactly 10 and 20 NFE on a held-out family of mixtures.

The family (``data_lib.heldout.heldout_mixtures``, fixed seeds, used for nothing but this evaluation): two
mixtures for each D in 2, 4, 8, 16 with 2-6 modes, random weights, mode stds 0.05-1.5 and rescaled means. For
VE, VP and sub-VP, every fast method (EDM Heun, DPM-Solver++(2M), UniPC-bh2 order 2; --methods unipc:3 etc. for
order 3) runs at exact budgets on

* the shipped grids: ``edm`` (rho = 7), ``logsnr``, and the grids fitted on the README mixture,
  ``fitted:<sde>_gmm2`` and ``fitted:<sde>_gmm16`` (``samplers/grids``);
* ``model``: a grid fitted per mixture, SDE and budget for UniPC-2 (--fit-method) by
  ``samplers.fit_grid.fit_grid_from_denoiser`` (what ``fit_grid_from_model`` runs) from --n-data samples of that
  mixture (key 11) and its exact denoiser (Tweedie's formula of the exact score), on --batch prior draws (key
  12), never the mixture's parameters; the other methods use it as ``grid="fitted:<file>"`` would (EDM Heun's
  fewer levels log-linearly resampled), as AYS uses one schedule with several solvers.

Every sample starts from the same --n prior draws (key 3, not fitted on) and is solved in x_hat = x/a against
sigma with the mixture's exact denoiser (``samplers.fit_grid.denoiser_solve``: the samplers' own updates;
``check`` rows give its largest difference from ``samplers.get_stepper`` + ``samplers.run`` on the first mixture).
Metrics as in ``fast_samplers_gmm``: mode-weight TV over the q99 floor of exact samples of the same size
(``metric_floor``, 200 repeats), std_err (worst |std ratio - 1| against the truth, sampling noise included:
its own floor is given) and spread_bias (worst |std / std_ref - 1| against a 500-step log-SNR DPM-Solver++(2M)
solve of the same draws: discretisation only). Target (issue 26): the best method within 1.5x the floor in TV
and spread within 10% at 10 NFE, 5% at 20 NFE; ``met`` uses spread_bias, ``met_raw`` std_err.

    python -m benchmarks.samplers.grid_transfer [--n 8192] [--nfes 10 20] [--sdes ve vp subvp] [--per-dim 2]

One compilation per (D, method, budget) serves every SDE, grid and mixture of that D (the denoiser and the grid
are arguments), which keeps the run near 15 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import samplers
import sde_lib
from benchmarks.common import RESULTS, commit, machine, write
from data_lib import heldout
from samplers import fit_grid, schedules

SDES = {"ve": sde_lib.VESDE(), "vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE()}
SDE_NAMES = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}
METHODS = fit_grid.FIT_METHODS
SHIPPED = ("edm", "logsnr", "fitted:{sde}_gmm2", "fitted:{sde}_gmm16")
TARGETS = {10: 0.10, 20: 0.05}
T_MIN, SIGMA_FLOOR = 1e-3, 0.01

_solve = jax.jit(fit_grid.denoiser_solve, static_argnames=("method", "nfe", "order"))


def ranges(sde):
  """(sigma_hi, sigma_lo, std of x_hat(T) under the prior) of an SDE."""
  hi, lo = schedules.sigma_ends(sde, T_MIN, SIGMA_FLOOR)
  return hi, lo, float(sde.prior_std / sde.marginal_coefs(jnp.asarray(sde.T))[0])


def metrics(mixture, x, ref, floor) -> dict:
  m = mixture.mode_metrics(x)
  return dict(tv=m["tv"], tv_x_floor=m["tv"] / floor["tv"], mean_err=m["mean_err"], std_err=m["std_err"],
              spread_bias=mixture.spread_bias(x, ref))


def check_rows(name, mixture, denoise, n, key):
  """Largest |denoiser_solve - sampler| over the n draws, per SDE and method at 10 NFE (log-SNR grid)."""
  rows = []
  for sde_name, sde in SDES.items():
    hi, lo, std = ranges(sde)
    x_hat = std * jax.random.normal(key, (n, mixture.dim))
    x_T = x_hat * sde.marginal_coefs(jnp.asarray(sde.T))[0]
    for method in METHODS:
      stepper = samplers.get_stepper(sde, (n, mixture.dim), method, nfe=10, grid="logsnr", t_min=T_MIN,
                                     sigma_floor=SIGMA_FLOOR)
      a = jax.jit(lambda x: samplers.run(stepper, jax.random.key(0), mixture.score_fn(sde), x_init=x)[0])(x_T)
      b = _solve(denoise, x_hat, jnp.asarray(stepper_sigmas(sde, method, 10, "logsnr"), jnp.float32), method=method,
                 nfe=10, order=2)
      rows.append(dict(kind="check", mixture=name, sde=sde_name, method=method, nfe=10, grid="logsnr",
                       max_abs_diff=float(jnp.max(jnp.abs(a - b)))))
      print(rows[-1], flush=True)
  return rows


def parse_method(label: str) -> tuple[str, int]:
  """"unipc" -> ("unipc", 2); "unipc:3" -> ("unipc", 3): a fast method and its multistep order (EDM Heun: 2)."""
  method, _, order = label.partition(":")
  if method not in METHODS or (order and (method == "edm_heun" or order not in ("1", "2", "3"))):
    raise SystemExit(f"--methods: {label!r} is not one of {list(METHODS)}, optionally ':1', ':2' or ':3' (not for "
                     "edm_heun)")
  return method, int(order or 2)


def stepper_sigmas(sde, method, nfe, grid):
  return schedules.sigma_grid(sde, fit_grid.grid_levels(method, nfe), grid, t_min=T_MIN, sigma_floor=SIGMA_FLOOR)


def run(args) -> tuple[list[dict], list[dict], dict]:
  family = heldout.heldout_mixtures(args.seed, per_dim=args.per_dim, dims=args.dims)
  rows, fits, desc = [], [], {}
  for i, (name, mixture) in enumerate(family):
    desc[name] = heldout.describe(mixture)
    print(name, desc[name], flush=True)
    denoise = heldout.mixture_denoiser(mixture)
    floor = mixture.metric_floor(jax.random.key(123), args.n)
    rows.append(dict(kind="floor", mixture=name, D=mixture.dim, **floor))
    data = mixture.sample(jax.random.key(11), args.n_data)                       # the "training data"
    if i == 0 and args.check:
      rows += check_rows(name, mixture, denoise, 256, jax.random.key(7))
    for sde_name in args.sdes:
      hi, lo, std = ranges(SDES[sde_name])
      x_hat = std * jax.random.normal(jax.random.key(3), (args.n, mixture.dim))   # evaluation draws
      ref = fit_grid.reference_solve(denoise, x_hat, hi, lo)
      for nfe in args.nfes:
        t0 = time.perf_counter()
        model, info = fit_grid.fit_grid_from_denoiser(jax.random.key(12), denoise, data, nfe, hi, lo, std,
                                                      method=args.fit_method, batch=args.batch, iters=args.iters,
                                                      delta_quantile=args.delta_quantile)
        fits.append(dict(mixture=name, sde=sde_name, method=args.fit_method, nfe=nfe, sigmas=model.tolist(),
                         seconds=time.perf_counter() - t0, init=info["init"], delta=info["delta"],
                         loss_logsnr=info["loss_logsnr"], loss_edm=info["loss_edm"], loss_fitted=info["loss_fitted"]))
        for label in args.methods:
          method, order = parse_method(label)
          grids = {g.format(sde=sde_name): stepper_sigmas(SDES[sde_name], method, nfe, g.format(sde=sde_name))
                   for g in SHIPPED}
          n = fit_grid.grid_levels(method, nfe)                # another method's budget: resampled as "fitted:" is
          grids["model"] = model if len(model) == n + 1 else schedules.loglinear_interp(model, n)
          for grid, sigmas in grids.items():
            x = _solve(denoise, x_hat, jnp.asarray(sigmas, jnp.float32), method=method, nfe=nfe, order=order)
            row = dict(kind="sample", mixture=name, D=mixture.dim, K=mixture.num_components, sde=sde_name,
                       method=label, grid=grid.replace(f"{sde_name}_", ""), nfe=nfe, **metrics(mixture, x, ref, floor))
            target = TARGETS.get(nfe, 0.10 if nfe <= 10 else 0.05)
            row["met"] = bool(row["tv_x_floor"] <= 1.5 and row["spread_bias"] <= target)
            row["met_raw"] = bool(row["tv_x_floor"] <= 1.5 and row["std_err"] <= target)
            rows.append(row)
          best = min((r for r in rows[-len(grids):]), key=lambda r: r["spread_bias"])
          print(f"{name} {sde_name:5s} nfe={nfe} {label:15s} fit {fits[-1]['seconds']:.1f}s "
                + " ".join(f"{r['grid']}={r['spread_bias']:.3f}/{r['tv_x_floor']:.2f}x" for r in rows[-len(grids):])
                + f" best {best['grid']}", flush=True)
  return rows, fits, desc


def summaries(rows) -> tuple[list[dict], list[dict]]:
  """The best (method, grid) per (mixture, sde, nfe) by spread_bias among those within 1.5x the TV floor (else
  by spread_bias alone), and per (sde, nfe, grid) how many mixtures its best method meets the target on."""
  samples = [r for r in rows if r["kind"] == "sample"]
  cases = sorted({(r["sde"], r["nfe"], r["mixture"]) for r in samples}, key=lambda c: (c[1], c[0], c[2]))
  best = []
  for sde, nfe, mix in cases:
    rs = [r for r in samples if (r["sde"], r["nfe"], r["mixture"]) == (sde, nfe, mix)]
    ok = [r for r in rs if r["tv_x_floor"] <= 1.5] or rs
    b = min(ok, key=lambda r: r["spread_bias"])
    bm = min((r for r in rs if r["grid"] == "model"), key=lambda r: (not r["met"], r["spread_bias"]))
    bl = min((r for r in rs if r["grid"] == "logsnr"), key=lambda r: (not r["met"], r["spread_bias"]))
    best.append(dict(sde=sde, nfe=nfe, mixture=mix, D=b["D"], K=b["K"], best=f"{b['method']} / {b['grid']}",
                     tv_x_floor=b["tv_x_floor"], spread_bias=b["spread_bias"], std_err=b["std_err"], met=b["met"],
                     model_best=f"{bm['method']}: {bm['spread_bias']:.3f}", logsnr_best=f"{bl['method']}: {bl['spread_bias']:.3f}"))
  agg = []
  grids = sorted({r["grid"] for r in samples}, key=lambda g: ["edm", "logsnr", "fitted:gmm2", "fitted:gmm16", "model"].index(g))
  for sde in sorted({r["sde"] for r in samples}, key=list(SDES).index):
    for nfe in sorted({r["nfe"] for r in samples}):
      for g in grids:
        per_mix = []
        for mix in sorted({r["mixture"] for r in samples}):
          rs = [r for r in samples if (r["sde"], r["nfe"], r["grid"], r["mixture"]) == (sde, nfe, g, mix)]
          if rs:
            per_mix.append(min(rs, key=lambda r: (not r["met"], r["spread_bias"])))
        if per_mix:
          agg.append(dict(sde=sde, nfe=nfe, grid=g, met=f"{sum(r['met'] for r in per_mix)}/{len(per_mix)}",
                          met_raw=f"{sum(r['met_raw'] for r in per_mix)}/{len(per_mix)}",
                          median_spread_bias=float(np.median([r["spread_bias"] for r in per_mix])),
                          worst_spread_bias=float(np.max([r["spread_bias"] for r in per_mix])),
                          worst_tv_x_floor=float(np.max([r["tv_x_floor"] for r in per_mix]))))
  return best, agg


def table(rows, columns) -> str:
  fmt = lambda v: (f"{v:.3g}" if isinstance(v, float) else str(v))
  return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                   + ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows])


def curve(names: list[str], sde: str = "vp") -> str:
  """Markdown: per mixture and budget, the best method's spread_bias (and TV / floor) on the model, log-SNR and
  best grid, from the rows of results/NAME.json for each NAME (runs at different --nfes)."""
  rows = []
  for name in names:
    with open(os.path.join(RESULTS, name + ".json")) as f:
      rows += [r for r in json.load(f)["rows"] if r["kind"] == "sample" and r["sde"] == sde]
  mixtures = sorted({r["mixture"] for r in rows}, key=lambda m: (int(m[1:].split("-")[0]), m))
  nfes = sorted({r["nfe"] for r in rows})
  out = []
  for mix in mixtures:
    line = {"mixture": mix}
    for nfe in nfes:
      rs = [r for r in rows if (r["mixture"], r["nfe"]) == (mix, nfe)]
      if not rs:
        continue
      pick = lambda grid: min((r for r in rs if grid in (None, r["grid"])), key=lambda r: (not r["met"], r["spread_bias"]))
      m, g, b = pick("model"), pick("logsnr"), pick(None)
      line[str(nfe)] = (f"{m['spread_bias']:.3f} / {g['spread_bias']:.3f} / {b['spread_bias']:.3f}"
                        + (" met" if b["met"] else ""))
    out.append(line)
  return table(out, ["mixture"] + [str(n) for n in nfes])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=8192, help="evaluation draws per case")
  parser.add_argument("--n-data", type=int, default=2048, help="training samples the fitter sees per mixture")
  parser.add_argument("--batch", type=int, default=512, help="prior draws the fitter fits on")
  parser.add_argument("--iters", type=int, default=150)
  parser.add_argument("--delta-quantile", type=float, default=0.5, help="fit_grid_from_denoiser's delta_quantile")
  parser.add_argument("--fit-method", default="unipc", choices=METHODS,
                      help="the solver the model grids are fitted for")
  parser.add_argument("--methods", nargs="*", default=list(METHODS),
                      help="the methods evaluated; METHOD:ORDER sets DPM-Solver++'s / UniPC's order (default 2)")
  parser.add_argument("--nfes", nargs="*", type=int, default=[10, 20])
  parser.add_argument("--sdes", nargs="*", default=list(SDES), choices=list(SDES))
  parser.add_argument("--per-dim", type=int, default=2)
  parser.add_argument("--dims", nargs="*", type=int, default=list(heldout.DIMS))
  parser.add_argument("--seed", type=int, default=heldout.HELDOUT_SEED, help="the family's seed (others: development)")
  parser.add_argument("--no-check", dest="check", action="store_false")
  parser.add_argument("--name", default="grid_transfer")
  parser.add_argument("--curve", nargs="*", default=[],
                      help="only append the NFE curves (one per --sdes) of these results to NAME.md")
  args = parser.parse_args()
  if args.curve:
    with open(os.path.join(RESULTS, args.name + ".md"), "a") as f:
      for sde in args.sdes:
        f.write(f"\n## {SDE_NAMES[sde]}: spread_bias of the best method against NFE (model grid / log-SNR / best of "
                "all grids; 'met': the best meets the target: TV within 1.5x the floor, spread within 10% at <= 10 "
                "NFE, 5% above)\n\n" + curve(args.curve, sde) + "\n")
    return
  t0 = time.perf_counter()
  rows, fits, desc = run(args)
  minutes = (time.perf_counter() - t0) / 60
  best, agg = summaries(rows)
  command = ("python -m benchmarks.samplers.grid_transfer " + " ".join(
      f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
      if k not in ("check", "name")))
  notes = (f"Held-out family (data_lib.heldout, seed {args.seed}): "
           + "; ".join(f"{k}: {v}" for k, v in desc.items())
           + f". n = {args.n} evaluation draws (key 3); the model grids fitted on {args.batch} other prior draws "
           f"(key 12) and {args.n_data} training samples (key 11), {args.iters} Adam steps. Wall time "
           f"{minutes:.1f} min on a shared 2-core machine (other jobs running: noisy). Command: `{command}`. "
           "Best = lowest spread_bias among the (method, grid) pairs within 1.5x the TV floor; model_best / "
           "logsnr_best: the best method's spread_bias on the per-mixture fitted grid and on log-SNR.")
  write(args.name, "Grid transfer: fast samplers on a held-out mixture family at exact NFE", best,
        ["sde", "nfe", "mixture", "D", "K", "best", "tv_x_floor", "spread_bias", "std_err", "met", "model_best",
         "logsnr_best"], notes=notes)
  with open(os.path.join(RESULTS, args.name + ".json"), "w") as f:
    json.dump({"machine": machine(), "commit": commit(), "command": command, "minutes": minutes, "family": desc,
               "best": best, "per_grid": agg, "rows": rows, "fits": fits}, f, indent=1)
  floors = [r for r in rows if r["kind"] == "floor"]
  checks = [r for r in rows if r["kind"] == "check"]
  with open(os.path.join(RESULTS, args.name + ".md"), "a") as f:
    f.write("\n## Per grid: the best method on each mixture (met = within target, of the mixtures)\n\n"
            + table(agg, ["sde", "nfe", "grid", "met", "met_raw", "median_spread_bias", "worst_spread_bias",
                          "worst_tv_x_floor"]) + "\n")
    f.write("\n## Noise floors of exact samples (q99 over 200 samples of n)\n\n"
            + table(floors, ["mixture", "D", "tv", "mean_err", "std_err"]) + "\n")
    if checks:
      f.write("\n## Check: denoiser_solve against the samplers (get_stepper + run), 256 draws\n\n"
              + table(checks, ["mixture", "sde", "method", "nfe", "grid", "max_abs_diff"]) + "\n")
  print(f"done in {minutes:.1f} min")


if __name__ == "__main__":
  main()
