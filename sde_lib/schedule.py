"""Processes defined by their schedule, x(t) = alpha(t) x(0) + sigma(t) eps: rectified flow, the cosine
schedule, or any (alpha, sigma) a user gives.

The SDE form is derived from the schedule (Kingma et al. 2021; as written in Lu et al. 2022, DPM-Solver, sec. 2):

    f(x, t) = (d log alpha / dt) x,        g(t)^2 = d sigma^2 / dt - 2 (d log alpha / dt) sigma^2
                                                  = 2 sigma^2 d log(sigma / alpha) / dt,

so h = -2 alpha'/alpha in the base class's f = -h x / 2, and g^2 >= 0 wherever sigma / alpha grows.

**The end point.** Rectified flow (alpha = 1 - t, sigma = t) and the cosine schedule reach alpha = 0 at T:
there f and g^2 are infinite, sigma / alpha is infinite, and the score of x(T) carries no information about
the data (it is -x / sigma^2 whatever the data), so no sampler that sees only a score can take its first step
from T. The process here is therefore held still once the signal has fallen to ``alpha_min`` (default 1e-3):
for t >= t_end, where alpha(t_end) = alpha_min, the marginal is that of t_end and f = g = 0. Every sampler,
the likelihood and the loss then see finite coefficients; sampling starts from the prior N(0, sigma(T)^2 I),
which differs from the held marginal N(alpha_min m, alpha_min^2 C + sigma(t_end)^2 I) of data with mean m and
covariance C by O(alpha_min): VP's own prior mismatch is a(1) = 0.0067. Schedules whose alpha(T) is above
alpha_min are not held.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib.base import SDE
from sde_lib.checks import check_positive

Schedule = Callable[[jax.Array], jax.Array]

# Grid on which a schedule is checked (monotone, finite, alpha(0) = 1, sigma(T) = 1).
_CHECK_POINTS = 4097
_ALPHA0_TOL = 1e-5
_SIGMA_T_TOL = 1e-3
_BISECTIONS = 40


class ScheduleSDE(SDE):
  """x(t) | x(0) ~ N(alpha(t) x(0), sigma(t)^2 I) for t in [0, T], with its SDE derived (module docstring).

  Arguments:
    alpha_fn: the signal scale alpha(t), an elementwise jax function of t (arrays of any shape),
      differentiable, non-increasing from alpha(0) = 1.
    sigma_fn: the noise scale sigma(t), likewise, non-decreasing to sigma(T) = 1 (the prior is N(0, I));
      sigma / alpha increasing.
    T: the end time.
    N: the number of levels of the discrete ladder (level i is the marginal at t = (i + 1) T / N, DDPM's
      convention of i + 1 noising steps).
    alpha_min: the signal at which the process is held (module docstring), in (0, 1).

  g(t) is computed from the schedule's derivatives; where one is infinite (sigma ~ sqrt(t) at t = 0) it is NaN
  at that point, which no sampler reaches (they stop at t_min > 0).

  Raises:
    ValueError: one line naming the field (alpha_fn, sigma_fn, T, N, alpha_min) that breaks a rule above.
  """

  def __init__(self, alpha_fn: Schedule, sigma_fn: Schedule, *, T: float = 1.0, N: int = 1000,
               alpha_min: float = 0.0067):
    super().__init__(N)
    self.T = check_positive("T", T)
    self.alpha_min = check_positive("alpha_min", alpha_min)
    if not alpha_min < 1:
      raise ValueError(f"alpha_min must be in (0, 1), got {alpha_min!r}")
    self.alpha_fn, self.sigma_fn = alpha_fn, sigma_fn
    t = np.linspace(0.0, self.T, _CHECK_POINTS)
    alpha, sigma = (np.asarray(fn(jnp.asarray(t, jnp.float32)), np.float64) for fn in (alpha_fn, sigma_fn))
    for name, v in (("alpha_fn", alpha), ("sigma_fn", sigma)):
      if v.shape != t.shape or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must map t in [0, T] elementwise to finite values, got shape {v.shape} "
                         f"with {int(np.sum(~np.isfinite(v)))} non-finite")
    if abs(alpha[0] - 1.0) > _ALPHA0_TOL:
      raise ValueError(f"alpha_fn(0) must be 1 (x(0) is the data), got {alpha[0]:.6g}")
    if abs(sigma[-1] - 1.0) > _SIGMA_T_TOL:
      raise ValueError(f"sigma_fn(T) must be 1 (the prior is N(0, I)), got {sigma[-1]:.6g} at T = {self.T}")
    if np.any(np.diff(alpha) > 1e-6) or np.any(alpha < -1e-6):
      i = int(np.argmax(np.diff(alpha)))
      raise ValueError(f"alpha_fn must be non-increasing and >= 0 on [0, T], got alpha({t[i]:.4g}) = {alpha[i]:.6g} "
                       f"< alpha({t[i + 1]:.4g}) = {alpha[i + 1]:.6g}")
    if np.any(np.diff(sigma) < -1e-6) or sigma[0] < 0:
      i = int(np.argmin(np.diff(sigma)))
      raise ValueError(f"sigma_fn must be non-decreasing and >= 0 on [0, T], got sigma({t[i]:.4g}) = {sigma[i]:.6g} "
                       f"> sigma({t[i + 1]:.4g}) = {sigma[i + 1]:.6g}")
    if not sigma[-1] > sigma[0]:
      raise ValueError(f"sigma_fn must grow on [0, T], got sigma(0) = {sigma[0]:.6g}, sigma(T) = {sigma[-1]:.6g}")
    moving = alpha > alpha_min                       # before the hold: sigma / alpha must increase (g > 0)
    ratio = sigma[moving] / alpha[moving]
    if np.any(np.diff(ratio) <= 0):
      i = int(np.argmin(np.diff(ratio)))
      raise ValueError(f"sigma_fn / alpha_fn must increase on [0, t_end], got {ratio[i]:.6g} at t = {t[moving][i]:.4g} "
                       f"and {ratio[i + 1]:.6g} at t = {t[moving][i + 1]:.4g}")
    self._t_end = self._hold_time(alpha[-1])
    self._prior_std = float(sigma[-1])

  def __repr__(self):
    return f"{type(self).__name__}(T={self.T}, N={self.N}, alpha_min={self.alpha_min})"

  @property
  def t_end(self) -> float:
    """The time at which alpha reaches alpha_min (T if it stays above); the process is held from there."""
    return self._t_end

  def _hold_time(self, alpha_T: float) -> float:
    """t_end with alpha(t_end) = alpha_min (bisection; alpha is non-increasing), or T if alpha(T) > alpha_min."""
    if alpha_T > self.alpha_min:
      return self.T
    lo, hi = 0.0, self.T
    for _ in range(60):
      mid = 0.5 * (lo + hi)
      lo, hi = (mid, hi) if float(self.alpha_fn(jnp.float32(mid))) > self.alpha_min else (lo, mid)
    return float(np.float32(lo))                    # exact in float32: t = t_end itself still moves (f, g > 0)

  # ---------------------------------------------------------------------- the schedule, held at t_end
  def _held(self, t):
    return jnp.minimum(jnp.asarray(t, jnp.float32), self.t_end)

  def marginal_coefs(self, t):
    u = self._held(t)
    return self.alpha_fn(u), self.sigma_fn(u)

  def marginal_rates(self, t):
    """(alpha, sigma, d alpha / dt, d sigma / dt) of the schedule at min(t, t_end), each shaped like t: the
    velocity parameterisation's coefficients (the rates of the schedule itself, also where it is held)."""
    u = self._held(t)
    (a, s), (da, ds) = jax.jvp(lambda v: (self.alpha_fn(v), self.sigma_fn(v)), (u,), (jnp.ones_like(u),))
    return a, s, da, ds

  def drift_coef(self, t):
    # f = (d log alpha / dt) x = -h x / 2  =>  h = -2 alpha' / alpha; 0 where the process is held.
    a, _, da, _ = self.marginal_rates(t)
    return jnp.where(jnp.asarray(t) <= self.t_end, -2.0 * da / a, 0.0)

  def diffusion(self, t):
    # g^2 = d sigma^2/dt - 2 (alpha'/alpha) sigma^2 = 2 sigma (sigma' - (alpha'/alpha) sigma); 0 where held.
    a, s, da, ds = self.marginal_rates(t)
    g2 = 2.0 * s * (ds - da / a * s)
    return jnp.where(jnp.asarray(t) <= self.t_end, jnp.sqrt(jnp.maximum(g2, 0.0)), 0.0)

  def t_from_sigma(self, sigma):
    """The time in [0, t_end] with sigma(t)/alpha(t) = sigma (clipped to that range), by bisection."""
    target = jnp.asarray(sigma, jnp.float32)
    ratio = lambda u: self.sigma_fn(u) / self.alpha_fn(u)

    def halve(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      below = ratio(mid) < target
      return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, halve, (jnp.zeros_like(target), jnp.full_like(target, self.t_end)))
    return 0.5 * (lo + hi)

  @property
  def prior_std(self):
    return self._prior_std

  def discrete_coefs(self):
    # Level i after i + 1 of N equal steps, t = (i + 1) T / N (DDPM's level 0 is one step of noise too).
    with jax.ensure_compile_time_eval():            # concrete even when called under a trace
      a, s = self.marginal_coefs(jnp.arange(1, self.N + 1, dtype=jnp.float32) * (self.T / self.N))
    return np.asarray(a, np.float64), np.asarray(s, np.float64)


class RectifiedFlow(ScheduleSDE):
  """Rectified flow / conditional flow matching's straight path (Liu et al. 2023; Lipman et al. 2023):
  x(t) = (1 - t) x(0) + t eps on [0, 1]. f = -x / (1 - t), g^2 = 2 t / (1 - t); held from t = 1 - alpha_min."""

  def __init__(self, N: int = 1000, alpha_min: float = 0.0067):
    super().__init__(lambda t: 1.0 - t, lambda t: t, T=1.0, N=N, alpha_min=alpha_min)

  def __repr__(self):
    return f"RectifiedFlow(N={self.N}, alpha_min={self.alpha_min})"

  def t_from_sigma(self, sigma):
    # sigma = t / (1 - t)  =>  t = sigma / (1 + sigma)
    sigma = jnp.asarray(sigma, jnp.float32)
    return jnp.clip(sigma / (1.0 + sigma), 0.0, self.t_end)


class CosineSDE(ScheduleSDE):
  """The cosine schedule alpha = cos(pi t / 2), sigma = sin(pi t / 2) on [0, 1] (variance preserving; the
  v-prediction schedule of Salimans & Ho 2022). sigma / alpha = tan(pi t / 2); held from alpha = alpha_min."""

  def __init__(self, N: int = 1000, alpha_min: float = 0.0067):
    super().__init__(lambda t: jnp.cos(0.5 * math.pi * t), lambda t: jnp.sin(0.5 * math.pi * t), T=1.0, N=N,
                     alpha_min=alpha_min)

  def __repr__(self):
    return f"CosineSDE(N={self.N}, alpha_min={self.alpha_min})"

  def t_from_sigma(self, sigma):
    return jnp.clip(jnp.arctan(jnp.asarray(sigma, jnp.float32)) * (2.0 / math.pi), 0.0, self.t_end)
