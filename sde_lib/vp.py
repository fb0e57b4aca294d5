"""Variance-preserving (DDPM) and sub-variance-preserving SDEs (Song et al. 2021, eqs. 11 and 12).

Both share the linear schedule beta(t) = beta_min + t (beta_max - beta_min), its integral
B(t) = beta_min t + t^2 (beta_max - beta_min) / 2, the drift f = -beta(t) x / 2, and so the mean
scale a(t) = exp(-B(t)/2) (eq. 29).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sde_lib.base import SDE, check_finite_nonnegative


class _LinearBetaSDE(SDE):
  """Shared schedule, validation and ladder of VPSDE and subVPSDE."""

  def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
    super().__init__(N)
    self.beta_min = check_finite_nonnegative("beta_min", beta_min)
    self.beta_max = check_finite_nonnegative("beta_max", beta_max)
    if self.beta_min > self.beta_max:
      raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min!r}, beta_max={beta_max!r}")
    if self.beta_max <= 0:
      raise ValueError(f"beta_max must be > 0, got {beta_max!r}")
    if self.beta_max / self.N >= 1:
      raise ValueError(f"N must exceed beta_max so that the discrete beta_i = beta/N < 1, got N={N!r}, beta_max={beta_max!r}")

  def __repr__(self):
    return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max}, N={self.N})"

  def drift_coef(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def integrated_beta(self, t):
    """B(t) = int_0^t beta(u) du."""
    return self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)

  def _t_from_integrated_beta(self, b):
    # Positive root of (beta_max - beta_min)/2 t^2 + beta_min t - b = 0, in the cancellation-free
    # form 2b / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) b)), valid for a flat schedule too.
    return 2 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2 * (self.beta_max - self.beta_min) * b))

  @property
  def prior_std(self):
    return 1.0

  def _alphas_cumprod(self):
    # DDPM's discrete betas beta_i = linspace(beta_min, beta_max, N) / N (Song et al. 2021 App. B).
    betas = np.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)
    return np.cumprod(1.0 - betas)


class VPSDE(_LinearBetaSDE):
  """dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw: the continuous DDPM (eq. 11).

  a(t) = exp(-B/2), s(t) = sqrt(1 - exp(-B)), sigma(t) = sqrt(e^B - 1); the ladder is DDPM's
  x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z with a_i = sqrt(alphabar_i), s_i = sqrt(1 - alphabar_i).
  """

  def marginal_coefs(self, t):
    b = self.integrated_beta(t)
    return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

  def diffusion(self, t):
    return jnp.sqrt(self.drift_coef(t))

  def t_from_sigma(self, sigma):
    # sigma^2 = e^B - 1  =>  B = log(1 + sigma^2)
    return self._t_from_integrated_beta(jnp.log1p(jnp.square(sigma)))

  def discrete_coefs(self):
    abar = self._alphas_cumprod()
    return np.sqrt(abar), np.sqrt(1.0 - abar)


class subVPSDE(_LinearBetaSDE):
  """dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - e^{-2 B(t)})) dw: the sub-VP SDE (eq. 12).

  a(t) = exp(-B/2) and s(t) = 1 - exp(-B) -- no square root (eq. 29) -- so s^2 <= VP's s^2, and
  sigma(t) = e^{B/2} - e^{-B/2} = 2 sinh(B/2).

  score_sde gives sub-VP no discrete chain, so its Langevin corrector and ancestral sampler fail
  on it. Here the ladder mirrors DDPM's with the sub-VP marginal: a_i = sqrt(alphabar_i) and
  s_i = 1 - alphabar_i, which are a(t_i), s(t_i) with exp(-B(t_i)) replaced by its discrete
  product alphabar_i = prod_j (1 - beta_j) (an O(1/N) change, as for VP). The exact Gaussian steps
  between these marginals (``SDE.transition_coefs``) are
      x_i = sqrt(1 - beta_i) x_{i-1} + sqrt((1 - abar_i)^2 - (1 - beta_i)(1 - abar_{i-1})^2) z,
  whose variance is positive since 1 - abar_i >= 1 - abar_{i-1}, and alpha_i = 1 - beta_i as for VP.
  """

  def marginal_coefs(self, t):
    b = self.integrated_beta(t)
    return jnp.exp(-0.5 * b), -jnp.expm1(-b)

  def diffusion(self, t):
    b = self.integrated_beta(t)
    return jnp.sqrt(self.drift_coef(t) * -jnp.expm1(-2.0 * b))

  def t_from_sigma(self, sigma):
    # sigma = 2 sinh(B/2)  =>  B = 2 asinh(sigma/2)
    return self._t_from_integrated_beta(2.0 * jnp.arcsinh(0.5 * sigma))

  def discrete_coefs(self):
    abar = self._alphas_cumprod()
    return np.sqrt(abar), 1.0 - abar
