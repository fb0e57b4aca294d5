"""EDM's Heun sampler of the probability-flow ODE, on every SDE through sigma(t) and a(t).

It works with the scaled variable x_hat = x / a(t), whose marginal is the data plus sigma(t) noise
(Karras et al. 2022, eq. 10 / sec. 4), so one algorithm serves VE, VP and sub-VP. The multistep
solvers (DPM-Solver++, UniPC) are in ``samplers.multistep``; the grids in ``samplers.schedules``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from samplers import common, schedules, steps
from sde_lib import SDE, batch_broadcast, checks


def heun_budget(nfe, denoise: bool) -> tuple[int, int]:
  """(Heun steps H, Euler steps E in {0, 1}) spending exactly ``nfe`` evaluations: 2H + E + denoise = nfe."""
  rest = schedules.steps_for_budget(nfe, denoise) if denoise else common.check_steps("nfe", nfe)
  return rest // 2, rest % 2


@dataclasses.dataclass(frozen=True)
class EDMHeunOptions(checks.Options):
  """Options of ``get_edm_heun_sampler``, with their defaults.

  num_steps: N levels (EDM's N; M = N - 1 Heun steps). nfe: an exact budget of score evaluations (final
  denoising included) instead; None: use num_steps. grid: "edm" (eq. 5, uniform in sigma^(1/rho)),
  "logsnr" or "fitted:<name>" (``samplers.schedules``). rho: the edm grid's exponent. t_min, sigma_floor: the
  lowest level is sigma_lo = max(sigma_floor, sigma(t_min)) (0.01: where every SDE ends). denoise: a last
  Euler step from sigma_lo to sigma = 0, which lands on D (1 NFE). s_churn, s_tmin, s_tmax, s_noise: Alg. 2's
  S_churn, S_tmin, S_tmax, S_noise (stochasticity; 0 churn: deterministic). checkpoint: rematerialise each
  Heun step in the backward pass. thresholding: "none", "static" (clip the denoiser's output D to [data_min,
  data_max]) or "dynamic" (Saharia et al. 2022 sec. 2.3 with quantile ``threshold_percentile``;
  ``common.dynamic_threshold``): D is corrected where it is formed, so the ODE's direction (x_hat - D) / sigma
  and the final denoising use it. data_min, data_max: the data range (image configs: [-1, 1] if data.centered
  else [0, 1]).
  """

  num_steps: int = checks.spec(18, checks.integer(2))
  nfe: int | None = checks.spec(None, checks.optional(checks.integer(1)))
  grid: str = checks.spec("edm", schedules.GRID)
  rho: float = checks.spec(7.0, common.POSITIVE_FLOAT)
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  sigma_floor: float = checks.spec(0.01, common.POSITIVE_FLOAT)
  denoise: bool = checks.spec(True, checks.boolean)
  s_churn: float = checks.spec(0.0, checks.number(0.0))
  s_tmin: float = checks.spec(0.0, checks.number(0.0))
  s_tmax: float = checks.spec(math.inf, checks.number(0.0, allow_inf=True))
  s_noise: float = checks.spec(1.0, checks.number(0.0))
  checkpoint: bool = checks.spec(False, checks.boolean)
  thresholding: str = checks.spec("none", common.THRESHOLDING)
  data_min: float = checks.spec(-1.0, common.DATA_BOUND)
  data_max: float = checks.spec(1.0, common.DATA_BOUND)
  threshold_percentile: float = checks.spec(0.995, common.PERCENTILE)

  def __post_init__(self):
    super().__post_init__()
    common.check_data_range(self)


def euler_step(D, x_hat, sigma, sigma_next):
  """EDM's Euler step in x_hat (Karras et al. 2022, Alg. 1 lines 4-5) with the denoiser D(x_hat; sigma):
  (d = (x_hat - D) / sigma, x_next = x_hat + (sigma_next - sigma) d, D), arrays shaped like x_hat [B, ...]."""
  denoised = D(x_hat, sigma)
  d = (x_hat - denoised) / sigma
  return d, x_hat + (sigma_next - sigma) * d, denoised


def heun_correction(D, x_hat, sigma, sigma_next, d, x_next):
  """EDM's second-order correction (Alg. 1 lines 7-8) of an ``euler_step`` (d, x_next) from x_hat at sigma:
  (x_hat + (sigma_next - sigma) (d + d') / 2, D(x_next; sigma_next)) with d' = (x_next - D) / sigma_next."""
  denoised = D(x_next, sigma_next)
  d_next = (x_next - denoised) / sigma_next
  return x_hat + (sigma_next - sigma) * 0.5 * (d + d_next), denoised


class EDMHeunStepper:
  """EDM's Heun steps (``steps.Stepper``) in x_hat on the levels sigma_0 = sigma(T) > ... > sigma_M."""

  def __init__(self, sde: SDE, shape, options: EDMHeunOptions):
    self.sde, self.shape, self.options = sde, common.check_shape(shape), options
    o = options
    if o.nfe is None:
      self.heun, self.euler = o.num_steps - 1, 0
    else:
      self.heun, self.euler = heun_budget(o.nfe, o.denoise)
    self.M = self.heun + self.euler
    t_min = common.check_t_min(sde, o.t_min)
    self.sigma_list = schedules.sigma_grid(sde, self.M, o.grid, t_min=t_min, sigma_floor=o.sigma_floor, rho=o.rho)
    self.start, self.stop, self.checkpoint = self.euler, self.M, o.checkpoint
    self.step_nfe = 2
    self.nfe = 2 * self.heun + self.euler + int(o.denoise)
    self.threshold = common.thresholder(o)

  def _D(self, score_fn):
    """EDM's denoiser D(x_hat; sigma) (Tweedie's formula, thresholded if asked)."""
    return common.scaled_denoiser(self.sde, score_fn, self.shape[0], self.threshold)

  def _sigmas(self):
    return jnp.asarray(self.sigma_list, jnp.float32)

  def times(self):
    return schedules.times_of(self.sde, self.sigma_list)

  def _churn(self, k, x_hat, keys):
    # Alg. 2 lines 4-6: raise the noise to sigma_hat = (1 + gamma) sigma_i, at most to sigma(T) = sigma_0: the
    # network was trained on t <= T only (EDM keeps S_tmax = 50 below sigma_max = 80 for the same reason), so
    # the first level, already at T, is not churned.
    o, sigmas = self.options, self._sigmas()
    sigma = sigmas[k]
    gamma = jnp.where((o.s_tmin <= sigma) & (sigma <= o.s_tmax), min(o.s_churn / (self.M + 1), math.sqrt(2) - 1), 0.0)
    sigma_hat = jnp.minimum(sigma * (1 + gamma), sigmas[0])
    noise = common.per_sample_normal(keys, k + 1, self.shape)
    # max(., 0): at the cap sigma_hat = sigma, and XLA may contract sigma_hat^2 - sigma^2 into an FMA whose exact
    # product minus the rounded square is a tiny negative: sqrt gave NaN on VP and sub-VP (any s_churn > 0).
    return x_hat + jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0)) * o.s_noise * noise, sigma_hat

  def _euler(self, D, k, x_hat, keys):
    sigmas = self._sigmas()
    x_hat, sigma_hat = self._churn(k, x_hat, keys) if self.options.s_churn > 0 else (x_hat, sigmas[k])
    d, x_next, denoised = euler_step(D, x_hat, sigma_hat, sigmas[k + 1])
    return x_hat, sigma_hat, d, x_next, denoised

  def init(self, score_fn, x, keys):
    a_T = self.sde.marginal_coefs(jnp.asarray(self.sde.T))[0]
    x_hat = x / a_T
    denoised = jnp.zeros_like(x_hat)
    if self.euler:
      _, _, _, x_hat, denoised = self._euler(self._D(score_fn), 0, x_hat, keys)
    return x_hat, denoised

  def step(self, score_fn, k, state, keys):
    D = self._D(score_fn)
    x_hat, _ = state
    x_hat, sigma_hat, d, x_next, _ = self._euler(D, k, x_hat, keys)
    return heun_correction(D, x_hat, sigma_hat, self._sigmas()[k + 1], d, x_next)

  def _a(self, k):
    return self.sde.marginal_coefs(self.times()[k])[0]

  def x_of(self, state, k):
    return self._a(k) * state[0]

  def with_x(self, state, k, x):
    return x / self._a(k), state[1]

  def denoised_of(self, state):
    return state[1]

  def finish(self, score_fn, state, keys):
    x_hat, batch = state[0], self.shape[0]
    sigmas = self._sigmas()
    if not self.options.denoise:
      a_lo = self.sde.marginal_coefs(common.full_time(self.sde.t_from_sigma(sigmas[self.M]), batch))[0]
      return batch_broadcast(a_lo, x_hat) * x_hat
    x_hat, sigma_hat = self._churn(self.M, x_hat, keys) if self.options.s_churn > 0 else (x_hat, sigmas[self.M])
    return self._D(score_fn)(x_hat, sigma_hat)                            # Euler to sigma = 0 lands on D


def get_edm_heun_sampler(sde: SDE, shape, options: EDMHeunOptions | None = None, **overrides):
  """EDM's 2nd-order Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 with s_churn > 0; ``EDMHeunOptions``).

  Levels sigma_0 = sigma(T) > ... > sigma_M = sigma_lo = max(sigma_floor, sigma(t_min)) on ``grid``. The
  denoiser D(x_hat; sigma) is Tweedie's formula in the scaled variable (``common.scaled_denoiser``).
  ``denoise``: a last Euler step from sigma_lo to sigma = 0, which lands on D (1 NFE, as Alg. 1's last step);
  without it the sample stays at sigma_lo.

  The budget: ``num_steps`` = N levels, NFE = 2N - 2 + denoise; or ``nfe`` = an exact budget B (final
  denoising included), spent as H = (B - denoise) // 2 Heun steps and, when B - denoise is odd, one Euler
  step first, from sigma(T) (1 NFE: there D is nearly the data mean, constant, so Euler is nearly exact),
  so 2H + E + denoise = B exactly.

  The lowest level: in x_hat the ODE is the same for every SDE, so two SDEs sampled on the same levels from
  the same draws agree. sub-VP's sigma(t_min = 1e-3) is 1.1e-4 (VP's 0.0105, VE's 0.0101), so the floor
  0.01 keeps every SDE on the same levels.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  return steps.sampler_from_stepper(EDMHeunStepper(sde, shape, EDMHeunOptions.build(options, **overrides)))
