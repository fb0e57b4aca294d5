"""Likelihood accuracy and speed against the Gaussian-mixture oracle.

For VE, VP and sub-VP, D in {2, 16, 64}, rtol = atol in {1e-3, 1e-4, 1e-5}, exact and Hutchinson
(Rademacher, one probe) divergences, batch 64: the solver error in bits/dim (logp - prior_logp(z)
+ log p_T(z) against the oracle's exact log p_eps(x)), the prior mismatch log p_T(z) - prior_logp(z)
in bits/dim (not solver error), NFE, compile and run time. Then, in the same run, score_sde's
approach -- scipy solve_ivp RK45 on the host calling a jitted drift-and-divergence, one probe --
against the on-device path at 1e-5.

    python -m benchmarks.samplers.likelihood_gmm
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

import samplers
import sde_lib
from benchmarks.common import time_compiled, write
from data_lib import example_mixture
from samplers import drift_and_divergence

EPS = 1e-5
BATCH = 64
SDES = {"VE": sde_lib.VESDE(), "VP": sde_lib.VPSDE(), "sub-VP": sde_lib.subVPSDE()}
NATS_TO_BITS = 1 / math.log(2)


def errors_bpd(sde, mixture, x, logp, z):
  d = x.shape[1]
  log_pT = mixture.log_prob_t(z, jnp.full((BATCH,), sde.T), sde)
  exact = mixture.log_prob_t(x, jnp.full((BATCH,), EPS), sde)
  solver = np.asarray(logp - sde.prior_logp(z) + log_pT - exact, np.float64) / d * NATS_TO_BITS
  mismatch = np.asarray(log_pT - sde.prior_logp(z), np.float64) / d * NATS_TO_BITS
  return float(np.mean(np.abs(solver))), float(np.mean(solver)), float(np.mean(mismatch))


def device_rows():
  rows = []
  for dim in (2, 16, 64):
    mixture = example_mixture(dim)
    x = mixture.sample(jax.random.key(0), BATCH)
    for sde_name, sde in SDES.items():
      score_fn = mixture.score_fn(sde)
      for tol in (1e-3, 1e-4, 1e-5):
        for divergence in ("exact", "hutchinson_rademacher"):
          fn = samplers.get_likelihood_fn(sde, rtol=tol, atol=tol, t_min=EPS, divergence=divergence)
          run = jax.jit(lambda k, f=fn: f(k, score_fn, x))
          compile_s, run_s, (logp, z, nfe) = time_compiled(run, jax.random.key(1))
          abs_err, bias, mismatch = errors_bpd(sde, mixture, x, logp, z)
          rows.append(dict(sde=sde_name, D=dim, tol=tol, divergence=divergence, nfe=int(nfe),
                           solver_err_bpd=abs_err, solver_bias_bpd=bias, prior_mismatch_bpd=mismatch,
                           compile_s=compile_s, run_s=run_s))
          print(rows[-1], flush=True)
  return rows


def host_rows(dim: int = 2, tol: float = 1e-5):
  """score_sde's likelihood: scipy RK45 on the host, one Rademacher probe, jitted drift+divergence."""
  rows = []
  mixture = example_mixture(dim)
  x = mixture.sample(jax.random.key(0), BATCH)
  for sde_name, sde in SDES.items():
    score_fn = mixture.score_fn(sde)
    fn = samplers.get_likelihood_fn(sde, rtol=tol, atol=tol, t_min=EPS, divergence="hutchinson_rademacher")
    _, dev_s, (_, _, dev_nfe) = time_compiled(jax.jit(lambda k: fn(k, score_fn, x)), jax.random.key(1), repeats=5)

    probe = jax.random.rademacher(jax.random.key(2), (1, BATCH, dim), dtype=jnp.float32)
    rsde = sde.reverse(score_fn, probability_flow=True)

    @jax.jit
    def augmented(t, y):
      drift, div = drift_and_divergence(lambda v: rsde.sde(v, jnp.full((BATCH,), t))[0], y, probe, "hutchinson_rademacher")
      return jnp.concatenate([drift.ravel(), div])

    def rhs(t, y):
      return np.asarray(augmented(t, jnp.asarray(y[:BATCH * dim].reshape(BATCH, dim), jnp.float32)), np.float64)

    y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(BATCH)])
    rhs(EPS, y0)
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      sol = integrate.solve_ivp(rhs, (EPS, sde.T), y0, rtol=tol, atol=tol, method="RK45")
      times.append(time.perf_counter() - t0)
    host_s = float(np.median(times))
    rows.append(dict(sde=sde_name, D=dim, batch=BATCH, tol=tol, device_nfe=int(dev_nfe), device_s=dev_s,
                     host_nfe=int(sol.nfev), host_s=host_s, speedup=host_s / dev_s))
    print(rows[-1], flush=True)
  return rows


def main():
  rows = device_rows()
  text = write("likelihood_gmm", f"Probability-flow likelihoods on the Gaussian-mixture oracle (batch {BATCH})", rows,
               ["sde", "D", "tol", "divergence", "nfe", "solver_err_bpd", "solver_bias_bpd", "prior_mismatch_bpd",
                "compile_s", "run_s"],
               notes="solver_err_bpd: mean |logp - prior_logp(z) + log p_T(z) - log p_eps(x)| per dimension, in "
                     "bits (for Hutchinson this includes the estimator's noise); solver_bias_bpd: its signed mean; "
                     "prior_mismatch_bpd: mean (log p_T(z) - prior_logp(z)) per dimension, in bits, which is not "
                     "solver error. Times: median of 3 runs, compile separate. Command: "
                     "`python -m benchmarks.samplers.likelihood_gmm`.")
  host = host_rows()
  text += "\n" + write("likelihood_host_vs_device", "Likelihood ODE: diffrax on device vs scipy RK45 on the host",
                       host, ["sde", "D", "batch", "tol", "device_nfe", "device_s", "host_nfe", "host_s", "speedup"],
                       notes="Same augmented probability-flow ODE (drift and one-probe Hutchinson divergence), "
                             "rtol = atol = 1e-5, from eps = 1e-5 to T. Run times (medians), compile excluded.")
  print(text)


if __name__ == "__main__":
  main()
