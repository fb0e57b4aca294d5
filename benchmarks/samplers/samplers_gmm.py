"""Sampler quality and speed against the Gaussian-mixture oracle, with an exact sample as the floor.

For VE, VP and sub-VP, each sampler at several NFE budgets, on the 4-mode mixture in 2 and 16
dimensions, n samples each: mode-weight total variation, the worst mode-mean error (in mode stds),
the worst spread error |std ratio - 1|, the sliced Wasserstein distance to an independent exact
sample, NFE, compile and run time. The floor rows are the medians of the same metrics over 20 further
exact samples of the same size (one second sample is itself too noisy to divide by). A last table
starts the probability-flow ODE from exact samples of p_T instead of the prior: the difference is the
prior mismatch, which no deterministic sampler can undo.
Then the probability-flow ODE on device (diffrax Tsit5) against score_sde's approach (scipy
solve_ivp RK45 on the host calling a jitted score each step) at rtol = atol = 1e-5, batch 64.

    python -m benchmarks.samplers.samplers_gmm [--n 8192] [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

import samplers
import sde_lib
from benchmarks.common import sliced_wasserstein, time_compiled, write
from data_lib import example_mixture

CONFIGS = {
    "pc rd+langevin": ("pc", "num_steps", [5, 10, 17, 50, 500], dict(predictor="reverse_diffusion", corrector="langevin")),
    "pc euler_maruyama": ("pc", "num_steps", [10, 20, 35, 100, 1000], dict(predictor="euler_maruyama", corrector="none")),
    "pc ancestral": ("pc", "num_steps", [10, 20, 35, 100, 1000], dict(predictor="ancestral_sampling", corrector="none")),
    "ode tsit5": ("ode", "rtol", [1e-2, 1e-3, 1e-5], dict()),
    "edm_heun": ("edm_heun", "num_steps", [5, 10, 18, 50], dict()),
    # denoise=False: the computation these rows measured before denoise became every sampler's default.
    "dpm_solver_pp": ("dpm_solver_pp", "num_steps", [10, 20, 35, 100], dict(denoise=False)),
    "ald": ("ald", "num_steps", [10, 100], dict(corrector_steps=50)),
}
SDES = {"VE": sde_lib.VESDE(), "VP": sde_lib.VPSDE(), "sub-VP": sde_lib.subVPSDE()}


def metrics(mixture, x, reference, key):
  m = mixture.mode_metrics(x)
  m["sw"] = sliced_wasserstein(x, reference, key)
  return m


def quality_rows(n: int, dims, quick: bool):
  rows = []
  key = jax.random.key(0)
  for dim in dims:
    mixture = example_mixture(dim)
    reference = mixture.sample(jax.random.key(1), n)
    exact = [metrics(mixture, mixture.sample(k, n), reference, key) for k in jax.random.split(jax.random.key(2), 20)]
    floor = {name: float(np.median([m[name] for m in exact])) for name in exact[0]}
    rows.append(dict(sde="(exact)", sampler="floor: median of 20 exact samples", D=dim, nfe=0, **floor))
    for sde_name, sde in SDES.items():
      score_fn = mixture.score_fn(sde)
      for name, (method, knob, values, base) in CONFIGS.items():
        for v in values[:2] if quick else values:
          options = dict(base, **{knob: v})
          if method == "ode":
            options["atol"] = v
          sample_fn = samplers.get_sampler(sde, (n, dim), method, **options)
          run = jax.jit(lambda k, f=sample_fn: f(k, score_fn))
          compile_s, run_s, (x, nfe) = time_compiled(run, jax.random.key(3))
          m = metrics(mixture, x, reference, key)
          row = dict(sde=sde_name, sampler=f"{name} ({knob}={v})", D=dim, nfe=int(nfe), **m,
                     tv_x_floor=m["tv"] / floor["tv"], sw_x_floor=m["sw"] / floor["sw"],
                     compile_s=compile_s, run_s=run_s)
          rows.append(row)
          print(f"{sde_name:6s} D={dim:2d} {row['sampler']:32s} nfe={row['nfe']:5d} tv={m['tv']:.4f} "
                f"mean={m['mean_err']:.3f} std={m['std_err']:.3f} sw={m['sw']:.4f} ({row['sw_x_floor']:.2f}x) "
                f"run={run_s:.3f}s", flush=True)
  return rows


def prior_mismatch_rows(n: int):
  """The ODE sampler from the prior versus from exact samples of p_T (2-D, rtol = atol = 1e-5)."""
  rows = []
  mixture = example_mixture(2)
  reference = mixture.sample(jax.random.key(1), n)
  for sde_name, sde in SDES.items():
    rsde = sde.reverse(mixture.score_fn(sde), probability_flow=True)
    for start in ("prior", "exact p_T"):
      @jax.jit
      def run(key, start=start):
        x = sde.prior_sampling(key, (n, 2)) if start == "prior" else mixture.sample_t(key, n, sde.T, sde)
        return samplers.solve(lambda t, y: rsde.sde(y, jnp.full((n,), t))[0], x, sde.T, 1e-3)[0]
      m = metrics(mixture, run(jax.random.key(3)), reference, jax.random.key(0))
      rows.append(dict(sde=sde_name, start=start, **m))
      print(rows[-1], flush=True)
  return rows


def host_vs_device_rows(batch: int = 64, tol: float = 1e-5):
  """score_sde's ODE sampler (scipy RK45 on the host) versus diffrax on device, same tolerances."""
  rows = []
  mixture = example_mixture(2)
  for sde_name, sde in SDES.items():
    score_fn = mixture.score_fn(sde)
    shape = (batch, 2)
    device = jax.jit(lambda k: samplers.get_sampler(sde, shape, "ode", rtol=tol, atol=tol, denoise=False)(k, score_fn))
    _, dev_s, (_, dev_nfe) = time_compiled(device, jax.random.key(0), repeats=5)

    drift = jax.jit(lambda x, t: sde.reverse(score_fn, probability_flow=True).sde(x, jnp.full((batch,), t))[0])
    x0 = np.asarray(sde.prior_sampling(jax.random.key(0), shape), np.float64)

    def rhs(t, y):
      return np.asarray(drift(jnp.asarray(y.reshape(shape), jnp.float32), t), np.float64).ravel()

    rhs(1.0, x0.ravel())                                            # compile outside the timing
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      sol = integrate.solve_ivp(rhs, (sde.T, 1e-3), x0.ravel(), rtol=tol, atol=tol, method="RK45")
      times.append(time.perf_counter() - t0)
    host_s = float(np.median(times))
    rows.append(dict(sde=sde_name, batch=batch, tol=tol, device_nfe=int(dev_nfe), device_s=dev_s,
                     host_nfe=int(sol.nfev), host_s=host_s, speedup=host_s / dev_s))
    print(rows[-1], flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=8192)
  parser.add_argument("--quick", action="store_true", help="two budgets per sampler, D=2 only")
  args = parser.parse_args()
  dims = (2,) if args.quick else (2, 16)
  rows = quality_rows(args.n, dims, args.quick)
  text = write("samplers_gmm", f"Samplers on the Gaussian-mixture oracle (n = {args.n})", rows,
               ["sde", "sampler", "D", "nfe", "tv", "mean_err", "std_err", "sw", "tv_x_floor", "sw_x_floor",
                "compile_s", "run_s"],
               notes="tv: mode-weight total variation; mean_err: worst |mean - mu| in mode stds; std_err: worst "
                     "|std ratio - 1|; sw: sliced Wasserstein distance to an independent exact sample; *_x_floor: "
                     "that metric over the floor row's (a second exact sample). Times: median of 3 runs, compile "
                     "separate. Command: `python -m benchmarks.samplers.samplers_gmm`.")
  text += "\n" + write("samplers_prior_mismatch", "ODE sampler started from the prior or from exact p_T",
                       prior_mismatch_rows(args.n), ["sde", "start", "tv", "mean_err", "std_err", "sw"],
                       notes="Same ODE (Tsit5, rtol = atol = 1e-5, to eps = 1e-3, no denoising), same n; only the "
                             "starting distribution differs.")
  host = host_vs_device_rows()
  text += "\n" + write("samplers_ode_host_vs_device", "Probability-flow ODE: diffrax on device vs scipy RK45 on the host",
                       host, ["sde", "batch", "tol", "device_nfe", "device_s", "host_nfe", "host_s", "speedup"],
                       notes="Both integrate the same jitted probability-flow drift from T to 1e-3 at rtol = atol = "
                             "1e-5; the host loop is score_sde's approach (solve_ivp RK45 calling the jitted drift "
                             "each step). Run times only (medians), compile excluded for both.")
  print(text)


if __name__ == "__main__":
  main()
