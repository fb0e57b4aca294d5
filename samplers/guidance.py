"""Guidance: conditional sampling as a transformation of the score, so every sampler takes it.

By Bayes' rule the score of the conditional marginal p_t(x | y) is

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)        (Song et al. 2021 eq. 14)

so a sampler driven by the right-hand side samples p(x | y). ``scale`` multiplies the likelihood
term (classifier guidance, Dhariwal & Nichol 2021 sec. 4; scale 1 is the exact conditional).
Classifier-free guidance (Ho & Salimans 2022) takes the likelihood term as the difference of a
conditional and an unconditional score, grad_x log p_t(y | x) = s(x, t | y) - s(x, t).

A guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample
and Distribution Quality in Diffusion Models", their guidance interval; the equation number is not checked here) applies the scale only where the EDM noise level
sigma(t) = s(t)/a(t) (``sde.sigma``) lies in (sigma_lo, sigma_hi]; elsewhere the score is the unguided
conditional one, scale 1 (their w = 1).
"""

from __future__ import annotations

import math
import numbers

from typing import Callable

import jax
import jax.numpy as jnp

from sde_lib import ScoreFn

# log_likelihood_fn(x [B, ...], t [B]) -> [B]: log p_t(y | x) for a fixed observation y, row by row.
LogLikelihoodFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_scale(scale) -> float:
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
    raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
  return float(scale)


def check_interval(interval, name: str = "interval") -> tuple[float, float] | None:
  """None, or ``(sigma_lo, sigma_hi)`` as two floats with 0 <= sigma_lo < sigma_hi <= inf (a list or tuple of
  two numbers; bools and NaN refused).

  Raises:
    ValueError: anything else; the one-line message names ``name`` and the valid range.
  """
  if interval is None:
    return None
  valid = (f"{name} must be None or a pair (sigma_lo, sigma_hi) of noise levels with 0 <= sigma_lo < sigma_hi "
           f"<= inf, got {interval!r}")
  if not isinstance(interval, (tuple, list)) or len(interval) != 2:
    raise ValueError(valid)
  for v in interval:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
      raise ValueError(valid)
  lo, hi = float(interval[0]), float(interval[1])
  if not (0.0 <= lo < hi and lo < math.inf):
    raise ValueError(valid)
  return lo, hi


def _interval_mask(interval, sde, name: str):
  """``inside(x, t) -> bool`` shaped [B, 1, ...] (broadcasting against x): sigma(t) in (sigma_lo, sigma_hi]."""
  lo, hi = interval
  if sde is None or not callable(getattr(sde, "sigma", None)):
    raise ValueError(f"{name}: a guidance interval needs sde (any object with sigma(t) = s(t)/a(t), e.g. an "
                     f"sde_lib SDE), got sde={sde!r}")

  def inside(x, t):
    sigma = sde.sigma(jnp.asarray(t))
    mask = (sigma > lo) & (sigma <= hi)                     # (sigma_lo, sigma_hi], Kynkäänniemi et al. 2024
    return jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(x) - jnp.ndim(mask)))

  return inside


def guided_score_fn(score_fn: ScoreFn, log_likelihood_fn: LogLikelihoodFn, scale: float = 1.0, *,
                    interval: tuple[float, float] | None = None, sde=None) -> ScoreFn:
  """``score'(x, t) = score(x, t) + w(t) * grad_x log p_t(y | x)`` (eq. 14 above), [B, ...].

  Without ``interval``, w(t) = ``scale`` at every t. With ``interval = (sigma_lo, sigma_hi)`` (Kynkäänniemi
  et al. 2024):

      w(t) = scale   if sigma_lo < sigma(t) <= sigma_hi,        sigma(t) = s(t)/a(t) = ``sde.sigma(t)``
      w(t) = 1       otherwise

  i.e. outside the interval no guidance: the plain conditional score grad_x log p_t(x | y) (scale 1 of eq.
  14, their w = 1), never the unconditional one. Row b uses sigma(t[b]).

  ``log_likelihood_fn(x [B, ...], t [B]) -> [B]`` must treat rows independently (row b depends on
  x[b] only): the gradient of the sum over rows is then each row's own gradient. A noise-conditional
  classifier's log-softmax at the requested class is such a function. Samplers count NFE in calls of
  the score; each guided call also costs one classifier forward and backward pass.

  Arguments:
    interval: None (guidance at every noise level) or (sigma_lo, sigma_hi), 0 <= sigma_lo <
      sigma_hi <= inf, in units of sigma(t).
    sde: needed with ``interval``: its ``sigma(t)`` maps time to noise level.

  Raises:
    ValueError: a negative, infinite or non-numeric scale; a bad interval; an interval without sde.
  """
  scale = _check_scale(scale)
  interval = check_interval(interval)
  likelihood_grad = jax.grad(lambda x, t: jnp.sum(log_likelihood_fn(x, t)))

  if interval is None:
    def score(x, t):
      return score_fn(x, t) + scale * likelihood_grad(x, t)

    return score

  inside = _interval_mask(interval, sde, "guided_score_fn")

  def score_in_interval(x, t):
    w = jnp.where(inside(x, t), jnp.float32(scale), jnp.float32(1.0)).astype(x.dtype)   # 1: the conditional
    return score_fn(x, t) + w * likelihood_grad(x, t)

  return score_in_interval


def classifier_free_score_fn(conditional_score_fn: ScoreFn, unconditional_score_fn: ScoreFn,
                             scale: float = 1.0, *, interval: tuple[float, float] | None = None,
                             sde=None) -> ScoreFn:
  """``s(x, t) + scale * (s(x, t | y) - s(x, t))`` (Ho & Salimans 2022 eq. 6 with w = scale - 1).

  The difference s(x, t | y) - s(x, t) is grad_x log p_t(y | x) by Bayes' rule, so this is
  ``guided_score_fn`` with an implicit classifier: scale 1 gives the conditional score, 0 the
  unconditional one, > 1 sharpens towards y. Two score calls per evaluation (one when scale is 0 or 1).
  ``scale`` is the w of Kynkäänniemi et al. 2024 (D_w = w D(x; sigma, c) + (1 - w) D(x; sigma)).

  With ``interval = (sigma_lo, sigma_hi)`` the guided score applies only where sigma_lo < sigma(t) <=
  sigma_hi (``sde.sigma(t)``, the EDM noise level; Kynkäänniemi et al. 2024); elsewhere the score is
  the conditional one, s(x, t | y) (their w = 1: no guidance), exactly. Where no row of a call lies in the
  interval only the conditional score is evaluated (``lax.cond``), saving the unconditional call.

  Raises:
    ValueError: a negative, infinite or non-numeric scale; a bad interval; an interval without sde.
  """
  scale = _check_scale(scale)
  interval = check_interval(interval)
  if interval is None or scale == 1.0:
    if interval is not None:
      _interval_mask(interval, sde, "classifier_free_score_fn")     # validated, though scale 1 ignores it
    if scale == 1.0:
      return conditional_score_fn
    if scale == 0.0:
      return unconditional_score_fn

    def score(x, t):
      uncond = unconditional_score_fn(x, t)
      return uncond + scale * (conditional_score_fn(x, t) - uncond)

    return score

  inside = _interval_mask(interval, sde, "classifier_free_score_fn")

  def guided(x, t):
    cond, uncond = conditional_score_fn(x, t), unconditional_score_fn(x, t)
    value = uncond if scale == 0.0 else uncond + scale * (cond - uncond)
    return jnp.where(inside(x, t), value, cond)

  def score_in_interval(x, t):
    return jax.lax.cond(jnp.any(inside(x, t)), guided, conditional_score_fn, x, t)

  return score_in_interval
