"""Fast high-order samplers of the probability-flow ODE, on every SDE through sigma(t) and a(t).

Both work with the scaled variable x_hat = x / a(t), whose marginal is the data plus sigma(t) noise
(Karras et al. 2022, eq. 10 / sec. 4), so one algorithm serves VE, VP and sub-VP.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import SDE, ScoreFn, batch_broadcast


def get_edm_heun_sampler(sde: SDE, shape, *, num_steps: int = 18, rho: float = 7.0, t_min: float = 1e-3,
                         sigma_floor: float = 0.002, denoise: bool = True, s_churn: float = 0.0, s_tmin: float = 0.0,
                         s_tmax: float = math.inf, s_noise: float = 1.0):
  """EDM's 2nd-order Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 with s_churn > 0).

  sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_lo^(1/rho) - sigma_max^(1/rho)))^rho, i < N = num_steps
  (eq. 5), with sigma_max = sigma(T) and the lowest level sigma_lo = max(sigma_floor, sigma(t_min))
  (EDM's 0.002, or what the SDE reaches at t_min: VE's sigma(1e-3) = 0.01; sub-VP's 1e-4 would waste
  steps). The denoiser D(x_hat; sigma) is Tweedie's formula in the scaled variable
  (``common.scaled_denoiser``). ``denoise``: the last step goes from sigma_lo to sigma_N = 0, an Euler
  step that lands on D (1 NFE); without it the sample stays at sigma_lo. NFE = 2N - 2 + denoise.
  s_churn, s_tmin, s_tmax, s_noise: Alg. 2's S_churn, S_tmin, S_tmax, S_noise (stochasticity).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  shape = common.check_shape(shape)
  N = common.check_steps("num_steps", num_steps)
  if N < 2:
    raise ValueError(f"num_steps must be >= 2 for the EDM sampler, got {N}")
  common.check_positive("rho", rho)
  common.check_positive("sigma_floor", sigma_floor)
  t_min = common.check_t_min(sde, t_min)
  if s_churn < 0 or s_noise < 0:
    raise ValueError(f"s_churn and s_noise must be >= 0, got s_churn={s_churn!r}, s_noise={s_noise!r}")
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    sigma_hi, sigma_lo = common.sigma_range(sde, t_min, sigma_floor)
    a_T = sde.marginal_coefs(jnp.asarray(sde.T))[0]
    sigmas = jnp.concatenate([_edm_sigmas(sigma_hi, sigma_lo, N - 1, rho), jnp.zeros(1)])   # eq. 5, sigma_N = 0
    keys = common.per_sample_keys(key, batch)
    D = common.scaled_denoiser(sde, score_fn, batch)

    def churn(k, x_hat):
      # Alg. 2 lines 4-6: raise the noise to sigma_hat = (1 + gamma) sigma_i.
      sigma = sigmas[k]
      gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), min(s_churn / N, math.sqrt(2) - 1), 0.0)
      sigma_hat = sigma * (1 + gamma)
      noise = common.per_sample_normal(keys, k + 1, shape)
      return x_hat + jnp.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise, sigma_hat

    def heun_step(k, x_hat):
      x_hat, sigma_hat = churn(k, x_hat) if s_churn > 0 else (x_hat, sigmas[k])
      sigma_next = sigmas[k + 1]
      d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat                        # Euler step (Alg. 1 l. 4-5)
      x_next = x_hat + (sigma_next - sigma_hat) * d
      d_next = (x_next - D(x_next, sigma_next)) / sigma_next               # 2nd-order correction (l. 7-8)
      return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

    x_hat = sde.prior_std * common.per_sample_normal(keys, 0, shape) / a_T
    x_hat = jax.lax.fori_loop(0, N - 1, heun_step, x_hat)
    if not denoise:
      a_lo = sde.marginal_coefs(common.full_time(sde.t_from_sigma(sigma_lo), batch))[0]
      return batch_broadcast(a_lo, x_hat) * x_hat, jnp.asarray(2 * N - 2, jnp.int32)
    x_hat, sigma_hat = churn(N - 1, x_hat) if s_churn > 0 else (x_hat, sigmas[N - 1])
    x = D(x_hat, sigma_hat)                                                # Euler to sigma_N = 0 lands on D
    return x, jnp.asarray(2 * N - 1, jnp.int32)

  return sample_fn


def _edm_sigmas(sigma_max, sigma_min, n: int, rho: float):
  """EDM's grid (Karras et al. 2022 eq. 5): n + 1 levels from sigma_max to sigma_min, uniform in sigma^(1/rho)."""
  i = jnp.arange(n + 1)
  return (sigma_max ** (1 / rho) + i / n * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


GRIDS = ("edm", "logsnr")


def get_dpm_solver_pp_sampler(sde: SDE, shape, *, num_steps: int = 20, t_min: float = 1e-3,
                              sigma_floor: float = 0.002, denoise: bool = True, grid: str = "edm", rho: float = 7.0):
  """DPM-Solver++(2M), the multistep 2nd-order data-prediction solver (Lu et al. 2022b, Alg. 2).

  In the half-log-SNR lambda = log(a/s) = -log sigma, over N = num_steps steps from sigma(T) down to
  max(sigma_floor, sigma(t_min)) (as in ``get_edm_heun_sampler``) on EDM's rho-grid
  in sigma (``grid="edm"``, as k-diffusion's "DPM++ 2M Karras"; on the 2-D oracle mixture it halves
  the spread error of the uniform-lambda grid at 20 NFE) or uniform in lambda (``"logsnr"``), with
  the data prediction x_0(x, t) = (x + s^2 score)/a (Tweedie):
      x_i = (s_i/s_{i-1}) x_{i-1} - a_i (e^{-h_i} - 1) D_i,   h_i = lambda_i - lambda_{i-1}   (eq. 11 / Alg. 2)
      D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},    r_i = h_{i-1}/h_i; D_1 = x0_0 (1st order = DDIM).
  ``denoise`` returns x0 at the last level (1 NFE). NFE = N + denoise.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  shape = common.check_shape(shape)
  N = common.check_steps("num_steps", num_steps)
  t_min = common.check_t_min(sde, t_min)
  common.check_choice("grid", grid, GRIDS)
  common.check_positive("rho", rho)
  common.check_positive("sigma_floor", sigma_floor)
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    sigma_hi, sigma_lo = common.sigma_range(sde, t_min, sigma_floor)
    if grid == "edm":
      lams = -jnp.log(_edm_sigmas(sigma_hi, sigma_lo, N, rho))
    else:
      lams = jnp.linspace(-jnp.log(sigma_hi), -jnp.log(sigma_lo), N + 1)
    times = sde.t_from_sigma(jnp.exp(-lams)).at[0].set(sde.T)

    def data_prediction(x, k):
      return common.tweedie_denoise(sde, score_fn, x, common.full_time(times[k], batch))

    def step(k, carry):
      x, x0_prev = carry
      x0 = data_prediction(x, k)
      h = lams[k + 1] - lams[k]
      r = jnp.where(k == 0, 1.0, (lams[k] - lams[jnp.maximum(k - 1, 0)]) / h)   # r unused at k = 0
      d = jnp.where(k == 0, x0, (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev)
      a_next, s_next = sde.marginal_coefs(times[k + 1])
      s_now = sde.marginal_coefs(times[k])[1]
      return (s_next / s_now) * x - a_next * jnp.expm1(-h) * d, x0

    x = sde.prior_std * common.per_sample_normal(common.per_sample_keys(key, batch), 0, shape)
    x, _ = jax.lax.fori_loop(0, N, step, (x, jnp.zeros(shape)))
    if denoise:
      x = data_prediction(x, N)
    return x, jnp.asarray(N + int(denoise), jnp.int32)

  return sample_fn
