"""The abstract forward SDE  dx = f(x, t) dt + g(t) dw  and everything derived from it.

Every SDE here is *linear* with a state-independent diffusion, f(x, t) = -h(t) x / 2 (h = 0 for
VE, h = beta for VP and sub-VP). Its perturbation kernel is therefore Gaussian,

    x(t) | x(0)  ~  N(a(t) x(0), s(t)^2 I),                    (Song et al. 2021, eq. 29 / App. B)

and between any two times u < t,

    x(t) | x(u)  ~  N((a_t/a_u) x(u), s_t^2 - (a_t/a_u)^2 s_u^2).  (semigroup property of eq. 29)

A subclass supplies a(t), s(t), the drift scale h(t), g(t), the inverse noise level t(sigma), the
prior scale, and a discrete ladder (a_i, s_i), i = 0..N-1. The base class derives from those,
without any isinstance check:

* ``marginal_prob``, ``sigma``/``t_from_sigma`` (sigma = s/a, for EDM / DPM-Solver style samplers);
* ``discretize``: one step of the forward chain between ladder levels i-1 and i;
* ``ancestral_step_coefs``: the DDPM posterior of that chain with Tweedie's x(0) estimate;
* ``langevin_alpha``: the alpha_i of the Langevin corrector (Song et al. 2021, Alg. 4/5);
* ``reverse``: the reverse-time SDE or probability-flow ODE (Song et al. 2021, eqs. 6 and 13).

Conventions: x is [B, ...]; t is [B] in [0, T]; per-sample scalars such as s(t) are [B].
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib.checks import check_finite_nonnegative, check_positive_int  # noqa: F401  (re-exported)

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_broadcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-sample array ``v`` of shape [B] to [B, 1, ..., 1] so it broadcasts against x."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


class SDE(abc.ABC):
  """Abstract linear forward SDE on t in [0, T], with N discretisation levels.

  Subclasses implement the closed forms listed in the module docstring; everything a loss or a
  sampler needs is a method here.
  """

  T: float = 1.0
  # True for SDEs with a(t) = 1 whose noise grows without bound (VE). Score networks are conditioned
  # on sigma(t) there and on the time t otherwise (score_sde's convention, see models.get_score_fn).
  variance_exploding: bool = False

  def __init__(self, N: int):
    self.N = check_positive_int("N", N)

  @property
  def t_end(self) -> float:
    """The last time at which the process moves: T, or earlier for a process held still after it
    (``ScheduleSDE``). The marginal at T is that of t_end, so samplers and the likelihood integrate from t_end.
    """
    return self.T

  # ----------------------------------------------------------------- closed forms (subclasses)
  @abc.abstractmethod
  def marginal_coefs(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (a(t), s(t)), each shaped like t: x(t) | x(0) ~ N(a x(0), s^2 I)."""

  @abc.abstractmethod
  def drift_coef(self, t: jax.Array) -> jax.Array:
    """Returns h(t) with f(x, t) = -h(t) x / 2, shaped like t."""

  @abc.abstractmethod
  def diffusion(self, t: jax.Array) -> jax.Array:
    """Returns g(t), shaped like t."""

  @abc.abstractmethod
  def t_from_sigma(self, sigma: jax.Array) -> jax.Array:
    """The inverse of ``sigma(t) = s(t)/a(t)``; sigma is any array, t has its shape."""

  @property
  @abc.abstractmethod
  def prior_std(self) -> float:
    """Standard deviation of the isotropic Gaussian prior p_T."""

  @abc.abstractmethod
  def discrete_coefs(self) -> tuple[np.ndarray, np.ndarray]:
    """The discrete ladder: float64 arrays (a_i, s_i), i = 0..N-1, of the N-level chain.

    Level i sits at time t_i = i T / (N - 1); level -1 is the clean data (a = 1, s = 0).
    """

  # ----------------------------------------------------------------------- derived quantities
  def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Drift f(x, t) (shaped like x) and diffusion g(t) ([B]) of dx = f dt + g dw."""
    return -0.5 * batch_broadcast(self.drift_coef(t), x) * x, self.diffusion(t)

  def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean a(t) x (shaped like x) and std s(t) ([B]) of the perturbation kernel p_0t(x(t) | x)."""
    a, s = self.marginal_coefs(t)
    return batch_broadcast(a, x) * x, s

  def marginal_rates(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(a, s, da/dt, ds/dt) at t, each shaped like t (forward-mode autodiff of ``marginal_coefs``): the
    coefficients of the velocity v = a' x(0) + s' z of x(t) = a x(0) + s z (``models.get_score_fn``)."""
    t = jnp.asarray(t, jnp.float32)
    (a, s), (da, ds) = jax.jvp(self.marginal_coefs, (t,), (jnp.ones_like(t),))
    return a, s, da, ds

  def sigma(self, t: jax.Array) -> jax.Array:
    """Noise level sigma(t) = s(t)/a(t): x(t)/a(t) = x(0) + sigma(t) z (EDM, Karras et al. 2022 eq. 10)."""
    a, s = self.marginal_coefs(t)
    return s / a

  def prior_sampling(self, key: jax.Array, shape) -> jax.Array:
    """A sample of the prior N(0, prior_std^2 I), of the given shape [B, ...]."""
    return self.prior_std * jax.random.normal(key, shape)

  def prior_logp(self, z: jax.Array) -> jax.Array:
    """log N(z; 0, prior_std^2 I) in nats, summed over all but the batch axis: [B]."""
    d = math.prod(z.shape[1:])
    sq = jnp.sum(jnp.square(z.reshape(z.shape[0], -1)), axis=1)
    return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - 0.5 * sq / self.prior_std**2

  # ------------------------------------------------------------------------- discrete ladder
  def discrete_index(self, t: jax.Array) -> jax.Array:
    """Ladder level i = round(t (N-1) / T) of time t, as int32 (score_sde's convention)."""
    return jnp.round(t * (self.N - 1) / self.T).astype(jnp.int32)

  def discrete_time(self, i: jax.Array) -> jax.Array:
    """Time t_i = i T / (N - 1) of ladder level i (t_0 = 0 when N = 1)."""
    return jnp.asarray(i, jnp.float32) * (self.T / max(self.N - 1, 1))

  def _ladder(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(a_i, s_i, a_{i-1}, s_{i-1}) for i = 0..N-1 as float32 arrays, level -1 being clean data."""
    a, s = self.discrete_coefs()
    a_prev = np.concatenate([[1.0], a[:-1]])
    s_prev = np.concatenate([[0.0], s[:-1]])
    return tuple(jnp.asarray(v, jnp.float32) for v in (a, s, a_prev, s_prev))

  def discrete_marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a_i, s_i) of the ladder level nearest to t, each [B]."""
    a, s, _, _ = self._ladder()
    i = self.discrete_index(t)
    return a[i], s[i]

  def transition_coefs(self, t: jax.Array, t_prev: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(alpha, v) of the forward step x_t = alpha x_{t_prev} + sqrt(v) z, each [B].

    alpha = a_t / a_{t_prev},  v = s_t^2 - alpha^2 s_{t_prev}^2  (the semigroup kernel above).
    With ``t_prev=None`` the step is between ladder levels i(t) - 1 and i(t) of ``discrete_coefs``:
    VE gives (1, sigma_i^2 - sigma_{i-1}^2) (SMLD chain, Song et al. 2021 eq. 8), VP gives
    (sqrt(1 - beta_i), beta_i) (DDPM chain, eq. 10). With times t_prev < t it is the exact kernel
    of the continuous SDE between them, so that samplers can step on any grid.
    """
    if t_prev is None:
      a, s, a_prev, s_prev = self._ladder()
      i = self.discrete_index(t)
      a, s, a_prev, s_prev = a[i], s[i], a_prev[i], s_prev[i]
    else:
      (a, s), (a_prev, s_prev) = self.marginal_coefs(t), self.marginal_coefs(t_prev)
    alpha = a / a_prev
    return alpha, jnp.maximum(jnp.square(s) - jnp.square(alpha * s_prev), 0.0)

  def _prev_std(self, t: jax.Array, t_prev: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(s_t, s_{t_prev}) on the ladder (t_prev None) or at the two times."""
    if t_prev is None:
      _, s, _, s_prev = self._ladder()
      i = self.discrete_index(t)
      return s[i], s_prev[i]
    return self.marginal_coefs(t)[1], self.marginal_coefs(t_prev)[1]

  def discretize(self, x: jax.Array, t: jax.Array, t_prev: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One step of the forward chain: x_t = x_{t_prev} + f + G z (see ``transition_coefs``).

    Returns f = (alpha - 1) x (shaped like x) and G = sqrt(v) ([B]).
    """
    alpha, v = self.transition_coefs(t, t_prev)
    return batch_broadcast(alpha - 1.0, x) * x, jnp.sqrt(v)

  def ancestral_step_coefs(self, t: jax.Array, t_prev: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Coefficients of one ancestral (DDPM-posterior) step from t (or ladder level i(t)) to t_prev (or i-1).

    With Tweedie's estimate x_0 = (x_t + s_t^2 score) / a_t inserted in the Gaussian posterior
    q(x_{t_prev} | x_t, x_0) of the step (Ho et al. 2020, eqs. 6-7), the posterior is
        mean = (x_t + v score) / alpha,   var = v s_{t_prev}^2 / s_t^2.
    VE: mean = x + (sigma_i^2 - sigma_{i-1}^2) score, as in Song et al. 2021 eq. 47. VP: mean =
    (x + beta_i score)/sqrt(1 - beta_i) (eq. 10); for the variance score_sde takes beta_i, the other
    DDPM choice (Ho et al. 2020 sec. 3.2) -- here the posterior variance, the same on every SDE.

    Returns (1/alpha, v, posterior std), each [B].
    """
    alpha, v = self.transition_coefs(t, t_prev)
    s, s_prev = self._prev_std(t, t_prev)
    return 1.0 / alpha, v, jnp.sqrt(v * jnp.square(s_prev) / jnp.square(s))

  def langevin_alpha(self, t: jax.Array) -> jax.Array:
    """The alpha_i of the Langevin corrector step eps = 2 alpha (snr |z| / |score|)^2, [B].

    alpha_i = (a_i / a_{i-1})^2 on the ladder: 1 for VE (Song et al. 2021 Alg. 4) and 1 - beta_i
    for VP (Alg. 5); sub-VP shares VP's scale ladder and so its alpha_i.
    """
    alpha, _ = self.transition_coefs(t)
    return jnp.square(alpha)

  # ------------------------------------------------------------------------------- reverse
  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False, noise_scale: float | None = None) -> "ReverseSDE":
    """The reverse-time SDE (Song et al. 2021 eq. 6) or, if ``probability_flow``, the ODE (eq. 13); with
    ``noise_scale`` eta, the member of their family with diffusion eta g(t) (``ReverseSDE``)."""
    return ReverseSDE(self, score_fn, probability_flow, noise_scale)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """dx = [f - c g^2 score] dt + eta g dw-bar with c = (1 + eta^2) / 2, integrated from T down to 0.

  Every eta >= 0 has the forward process's marginals (Karras et al. 2022 eq. 6; SiT, Ma et al. 2024, whose
  dx = [v - w score / 2] dt + sqrt(w) dw-bar is this with w = eta^2 g^2, v the probability-flow drift): eta = 1 (the default) is the reverse SDE (Song et al. 2021 eq. 6, Anderson 1982),
  eta = 0 (or ``probability_flow``) the probability-flow ODE (eq. 13); the sampling noise is chosen after
  training. ``discretize`` (the ladder's reverse step) exists for eta in {0, 1} only.
  """

  forward: SDE
  score_fn: ScoreFn
  probability_flow: bool = False
  noise_scale: float | None = None

  @property
  def _eta(self) -> float:
    if self.probability_flow:
      return 0.0
    return 1.0 if self.noise_scale is None else float(self.noise_scale)

  @property
  def _c(self) -> float:
    return 0.5 * (1.0 + self._eta**2)

  def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reverse drift (shaped like x) and diffusion eta g ([B]; zeros for the probability flow)."""
    drift, g = self.forward.sde(x, t)
    drift = drift - self._c * batch_broadcast(jnp.square(g), x) * self.score_fn(x, t)
    return drift, jnp.zeros_like(g) if self._eta == 0 else self._eta * g

  def discretize(self, x: jax.Array, t: jax.Array, t_prev: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One reverse step of the chain: x_{t_prev} = x_t - rev_f + rev_G z (Song et al. 2021 eq. 46).

    rev_f = f - c G^2 score with (f, G) = forward.discretize(x, t, t_prev); rev_G = G (0 for the flow).
    """
    if self._eta not in (0.0, 1.0):
      raise ValueError(f"the reverse step of the chain exists for the reverse SDE and the probability flow only, "
                       f"got noise_scale={self.noise_scale!r}")
    f, G = self.forward.discretize(x, t, t_prev)
    rev_f = f - self._c * batch_broadcast(jnp.square(G), x) * self.score_fn(x, t)
    return rev_f, jnp.zeros_like(G) if self.probability_flow else G
