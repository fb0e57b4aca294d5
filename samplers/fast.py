"""EDM's Heun sampler of the probability-flow ODE, on every SDE through sigma(t) and a(t).

It works with the scaled variable x_hat = x / a(t), whose marginal is the data plus sigma(t) noise
(Karras et al. 2022, eq. 10 / sec. 4), so one algorithm serves VE, VP and sub-VP. The multistep
solvers (DPM-Solver++, UniPC) are in ``samplers.multistep``; the grids in ``samplers.schedules``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from samplers import common, schedules
from samplers.multistep import get_dpm_solver_pp_sampler, get_unipc_sampler  # noqa: F401  (re-exported)
from sde_lib import SDE, ScoreFn, batch_broadcast

GRIDS = schedules.GRIDS


def heun_budget(nfe, denoise: bool) -> tuple[int, int]:
  """(Heun steps H, Euler steps E in {0, 1}) spending exactly ``nfe`` evaluations: 2H + E + denoise = nfe."""
  rest = schedules.steps_for_budget(nfe, denoise) if denoise else common.check_steps("nfe", nfe)
  return rest // 2, rest % 2


def get_edm_heun_sampler(sde: SDE, shape, *, num_steps: int = 18, nfe: int | None = None, grid: str = "edm",
                         rho: float = 7.0, t_min: float = 1e-3, sigma_floor: float = 0.01, denoise: bool = True,
                         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                         checkpoint: bool = False):
  """EDM's 2nd-order Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 with s_churn > 0).

  Levels sigma_0 = sigma(T) > ... > sigma_M = sigma_lo = max(sigma_floor, sigma(t_min)) on ``grid``
  (default "edm": eq. 5, uniform in sigma^(1/rho); or "logsnr", "fitted:<name>", see
  ``samplers.schedules``). The denoiser D(x_hat; sigma) is Tweedie's formula in the scaled variable
  (``common.scaled_denoiser``). ``denoise``: a last Euler step from sigma_lo to sigma = 0, which lands on
  D (1 NFE, as Alg. 1's last step); without it the sample stays at sigma_lo.

  The budget: ``num_steps`` = N levels (EDM's N, M = N - 1 Heun steps), NFE = 2N - 2 + denoise; or
  ``nfe`` = an exact budget B (final denoising included), spent as H = (B - denoise) // 2 Heun steps
  and, when B - denoise is odd, one Euler step first, from sigma(T) (1 NFE: there D is nearly the
  data mean, constant, so Euler is nearly exact), so 2H + E + denoise = B exactly.
  s_churn, s_tmin, s_tmax, s_noise: Alg. 2's S_churn, S_tmin, S_tmax, S_noise (stochasticity).
  checkpoint: rematerialise each Heun step in the backward pass (``jax.checkpoint`` on the loop body;
  as ``get_pc_sampler``).

  The lowest level and sub-VP: in x_hat the ODE is the same for every SDE, so two SDEs sampled on the
  same levels from the same draws agree (VP and sub-VP, whose ends differ by < 5%, within 0.001 in every
  oracle metric at 35 NFE). They did not because sub-VP's sigma(t_min = 1e-3) is 1.1e-4 (VP's 0.0105, VE's 0.0101): with EDM's floor of 0.002
  sub-VP's grid ran 5x lower, moving every rho-grid level down (on the 2-D oracle at 11 NFE its worst
  spread error was 288% against VP's 183%; at 35 NFE its worst mean error 0.19 against 0.16 mode stds).
  The default ``sigma_floor`` is therefore 0.01, where every SDE ends. The remaining ~9% widening at
  35 NFE is shared by VP and VE: it is the rho = 7 grid's coarseness where the modes separate
  (sigma ~ 1-8), see benchmarks/results/fast_samplers_gmm.md.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  shape = common.check_shape(shape)
  if nfe is None:
    n_levels = common.check_steps("num_steps", num_steps)
    if n_levels < 2:
      raise ValueError(f"num_steps must be >= 2 for the EDM sampler, got {n_levels}")
    heun, euler = n_levels - 1, 0
  else:
    heun, euler = heun_budget(nfe, denoise)
  M = heun + euler
  schedules.check_grid(grid)
  common.check_positive("rho", rho)
  common.check_positive("sigma_floor", sigma_floor)
  t_min = common.check_t_min(sde, t_min)
  if s_churn < 0 or s_noise < 0:
    raise ValueError(f"s_churn and s_noise must be >= 0, got s_churn={s_churn!r}, s_noise={s_noise!r}")
  batch = shape[0]
  sigma_list = schedules.sigma_grid(sde, M, grid, t_min=t_min, sigma_floor=sigma_floor, rho=rho)

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    sigmas = jnp.asarray(sigma_list, jnp.float32)
    a_T = sde.marginal_coefs(jnp.asarray(sde.T))[0]
    keys = common.per_sample_keys(key, batch)
    D = common.scaled_denoiser(sde, score_fn, batch)

    def churn(k, x_hat):
      # Alg. 2 lines 4-6: raise the noise to sigma_hat = (1 + gamma) sigma_i.
      sigma = sigmas[k]
      gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), min(s_churn / (M + 1), math.sqrt(2) - 1), 0.0)
      sigma_hat = sigma * (1 + gamma)
      noise = common.per_sample_normal(keys, k + 1, shape)
      return x_hat + jnp.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise, sigma_hat

    def euler_step(k, x_hat):
      x_hat, sigma_hat = churn(k, x_hat) if s_churn > 0 else (x_hat, sigmas[k])
      d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat                        # Euler step (Alg. 1 l. 4-5)
      return x_hat, sigma_hat, d, x_hat + (sigmas[k + 1] - sigma_hat) * d

    def heun_step(k, x_hat):
      x_hat, sigma_hat, d, x_next = euler_step(k, x_hat)
      sigma_next = sigmas[k + 1]
      d_next = (x_next - D(x_next, sigma_next)) / sigma_next               # 2nd-order correction (l. 7-8)
      return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

    x_hat = sde.prior_std * common.per_sample_normal(keys, 0, shape) / a_T
    if euler:
      x_hat = euler_step(0, x_hat)[3]
    step = jax.checkpoint(heun_step) if checkpoint else heun_step              # remat: memory for compute
    x_hat = jax.lax.fori_loop(euler, M, step, x_hat)
    used = 2 * heun + euler
    if not denoise:
      a_lo = sde.marginal_coefs(common.full_time(sde.t_from_sigma(sigmas[M]), batch))[0]
      return batch_broadcast(a_lo, x_hat) * x_hat, jnp.asarray(used, jnp.int32)
    x_hat, sigma_hat = churn(M, x_hat) if s_churn > 0 else (x_hat, sigmas[M])
    x = D(x_hat, sigma_hat)                                                # Euler to sigma = 0 lands on D
    return x, jnp.asarray(used + 1, jnp.int32)

  return sample_fn
