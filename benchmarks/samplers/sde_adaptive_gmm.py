"""The adaptive reverse-SDE sampler (``sde_adaptive``) against fixed-step Euler-Maruyama on the oracle mixture.

For VE, VP and sub-VP and ``example_mixture(2)``, n samples from the exact score, for each of several sampling
keys: ``sde_adaptive`` at several rtol with per-sample and per-batch step control (atol 0.0078, the other
options at their defaults; plus ``rejection="fresh"``, Alg. 1's redraw after a rejection, at one rtol) and PC
Euler-Maruyama without corrector at 100, 200, 500 and 1000 steps (+1 denoising NFE each). Metrics:
``mode_metrics`` (mode-weight TV, worst mode-mean error in mode stds, worst spread error |std ratio - 1|), each
also over the floor (the 99th percentile over 200 exact samples of the same size, as in the tests). nfe: the
executed score evaluations per sample (for ``sde_adaptive`` 2 x the loop iterations of the batch's slowest sample
+ 1; with control=batch, of every sample).

Target (issue 26): Euler-Maruyama's TV and spreads at 1,000 steps at <= 150 NFE. ``target``: "yes" for an
adaptive row with nfe <= 150 whose tv, std_err (and mean_err, stricter than the issue) are each <= max(EM-1000's,
the floor): as good as EM-1000 up to sampling noise; met on an SDE when one setting does so on every key.

    python -m benchmarks.samplers.sde_adaptive_gmm [--n 4096] [--keys 3 4 5]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import samplers
import sde_lib
from benchmarks.common import write
from data_lib import example_mixture

SDES = {"ve": sde_lib.VESDE(), "vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE()}
RTOLS = (0.2, 0.1, 0.05, 0.02, 0.01)
CONTROLS = samplers.adaptive.CONTROLS
EM_STEPS = (100, 200, 500, 1000)
BUDGET = 150


def measure(sde, mixture, n, key, method, options):
  fn = samplers.get_sampler(sde, (n, 2), method, **options)
  x, nfe = jax.jit(lambda k: fn(k, mixture.score_fn(sde)))(key)
  return mixture.mode_metrics(x), int(nfe)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=4096)
  parser.add_argument("--keys", nargs="*", type=int, default=[3, 4, 5], help="sampling keys: every row per key")
  args = parser.parse_args()
  mixture = example_mixture(2)
  exact = [mixture.mode_metrics(mixture.sample(k, args.n)) for k in jax.random.split(jax.random.key(123), 200)]
  floor = {m: float(np.quantile([e[m] for e in exact], 0.99)) for m in exact[0]}
  rows = [dict(sde="(exact)", sampler="floor q99", **floor)]
  cases = [(f"sde_adaptive rtol={r} control={c}", dict(rtol=r, control=c)) for c in CONTROLS for r in RTOLS]
  cases.append(("sde_adaptive rtol=0.05 control=sample rejection=fresh", dict(rtol=0.05, rejection="fresh")))
  for name, sde in SDES.items():
    for key_seed in args.keys:
      key, sde_rows = jax.random.key(key_seed), []
      for steps in EM_STEPS:
        m, nfe = measure(sde, mixture, args.n, key, "pc", dict(predictor="euler_maruyama", corrector="none",
                                                                num_steps=steps))
        sde_rows.append(dict(sde=name, key=key_seed, sampler=f"euler_maruyama {steps} steps", nfe=nfe, **m))
      em = sde_rows[-1]
      for label, options in cases:
        m, nfe = measure(sde, mixture, args.n, key, "sde_adaptive", options)
        row = dict(sde=name, key=key_seed, sampler=label, nfe=nfe, **m)
        good = all(m[k] <= max(em[k], floor[k]) for k in ("tv", "mean_err", "std_err"))
        row["target"] = ("yes" if good else "no") if nfe <= BUDGET else ""
        sde_rows.append(row)
      for row in sde_rows:
        row.update({f"{k}_x_floor": row[k] / floor[k] for k in floor})
        print(row, flush=True)
      rows += sde_rows
  # Met on an SDE: one setting meets the target on every key.
  met = {s: any(all(r.get("target") == "yes" for r in rows if r["sde"] == s and r["sampler"] == label)
                for label, _ in cases) for s in SDES}
  summary = ("Target (EM-1000's TV and spreads at <= 150 NFE, on every key) met on: "
             + (", ".join(s for s in SDES if met[s]) or "none") + "; not met on: "
             + (", ".join(s for s in SDES if not met[s]) or "none") + ".")
  notes = (f"{summary} tv: mode-weight total variation; mean_err: worst |mean - mu| in mode stds; std_err: worst "
           "|std ratio - 1| against the mixture (sampling noise included); *_x_floor: over the q99 floor row. "
           "nfe: score evaluations per sample (sde_adaptive: 2 per attempted step of the batch's slowest sample, "
           "+1 denoising; data dependent). target: nfe <= 150 and tv, mean_err, std_err each <= max(EM-1000's of "
           "the same key, floor: the issue asks for tv and spreads; the means are held to it too); blank above 150 "
           "NFE. control=sample: each sample its own step (Alg. 1); control=batch: one step for the batch from the "
           "error over all of it. rejection=fresh is Alg. 1 as printed (a new draw "
           f"after a rejection). n = {args.n}, keys {' '.join(map(str, args.keys))}, atol 0.0078, h_init 0.01, "
           "theta 0.9, r 0.9, t_min 1e-3. Command: `python -m benchmarks.samplers.sde_adaptive_gmm`.")
  text = write("sde_adaptive_gmm", f"Adaptive reverse-SDE sampler vs Euler-Maruyama on the oracle (n = {args.n})",
               rows, ["sde", "key", "sampler", "nfe", "tv", "tv_x_floor", "mean_err", "mean_err_x_floor", "std_err",
                      "std_err_x_floor", "target"], notes=notes)
  print(text)


if __name__ == "__main__":
  main()
