"""Variance-exploding SDE: the continuous limit of SMLD / NCSN (Song et al. 2021, eq. 9)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib.base import SDE, check_finite_nonnegative


class VESDE(SDE):
  """dx = sqrt(d[sigma^2(t)]/dt) dw with sigma(t) = sigma_min (sigma_max/sigma_min)^t.

  g(t) = sigma(t) sqrt(2 log(sigma_max/sigma_min)); a(t) = 1, s(t) = sigma(t). As in score_sde, the
  kernel x(t) | x(0) ~ N(x(0), sigma(t)^2) treats the t = 0 marginal as the data already blurred by
  N(0, sigma_min^2): the SDE adds sigma(t)^2 - sigma_min^2 of variance on top of that.

  Arguments:
    sigma_min: smallest noise level, > 0.
    sigma_max: largest noise level (prior std), > sigma_min.
    N: number of levels of the discrete SMLD ladder sigma_i = sigma(i/(N-1)).
  """

  variance_exploding = True

  def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
    super().__init__(N)
    self.sigma_min = check_finite_nonnegative("sigma_min", sigma_min)
    self.sigma_max = check_finite_nonnegative("sigma_max", sigma_max)
    if self.sigma_min <= 0:
      raise ValueError(f"sigma_min must be > 0, got {sigma_min!r}")
    if self.sigma_min >= self.sigma_max:
      raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    self._log_ratio = math.log(self.sigma_max / self.sigma_min)

  def __repr__(self):
    return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"

  def marginal_coefs(self, t):
    sigma = self.sigma_min * jnp.exp(t * self._log_ratio)
    return jnp.ones_like(sigma), sigma

  def drift_coef(self, t):
    return jnp.zeros_like(jnp.asarray(t, jnp.float32))

  def diffusion(self, t):
    # g = sqrt(d sigma^2 / dt) = sigma(t) sqrt(2 log(sigma_max / sigma_min))   (eq. 30)
    return self.sigma_min * jnp.exp(t * self._log_ratio) * math.sqrt(2 * self._log_ratio)

  def t_from_sigma(self, sigma):
    return jnp.log(sigma / self.sigma_min) / self._log_ratio

  @property
  def prior_std(self):
    return self.sigma_max

  def discrete_coefs(self):
    # SMLD's geometric ladder (Song & Ermon 2019): sigma_i = exp(linspace(log sigma_min, log sigma_max, N)).
    s = np.exp(np.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N))
    return np.ones_like(s), s
