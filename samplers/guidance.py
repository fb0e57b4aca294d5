"""Guidance: conditional sampling as a transformation of the score, so every sampler takes it.

By Bayes' rule the score of the conditional marginal p_t(x | y) is

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)        (Song et al. 2021 eq. 14)

so a sampler driven by the right-hand side samples p(x | y). ``scale`` multiplies the likelihood
term (classifier guidance, Dhariwal & Nichol 2021 sec. 4; scale 1 is the exact conditional).
Classifier-free guidance (Ho & Salimans 2022) takes the likelihood term as the difference of a
conditional and an unconditional score, grad_x log p_t(y | x) = s(x, t | y) - s(x, t).
"""

from __future__ import annotations

import math

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


def guided_score_fn(score_fn: ScoreFn, log_likelihood_fn: LogLikelihoodFn, scale: float = 1.0) -> ScoreFn:
  """``score'(x, t) = score(x, t) + scale * grad_x log p_t(y | x)`` (eq. 14 above), [B, ...].

  ``log_likelihood_fn(x [B, ...], t [B]) -> [B]`` must treat rows independently (row b depends on
  x[b] only): the gradient of the sum over rows is then each row's own gradient. A noise-conditional
  classifier's log-softmax at the requested class is such a function. Samplers count NFE in calls of
  the score; each guided call also costs one classifier forward and backward pass.

  Raises:
    ValueError: a negative, infinite or non-numeric scale.
  """
  scale = _check_scale(scale)
  likelihood_grad = jax.grad(lambda x, t: jnp.sum(log_likelihood_fn(x, t)))

  def score(x, t):
    return score_fn(x, t) + scale * likelihood_grad(x, t)

  return score


def classifier_free_score_fn(conditional_score_fn: ScoreFn, unconditional_score_fn: ScoreFn,
                             scale: float = 1.0) -> ScoreFn:
  """``s(x, t) + scale * (s(x, t | y) - s(x, t))`` (Ho & Salimans 2022 eq. 6 with w = scale - 1).

  The difference s(x, t | y) - s(x, t) is grad_x log p_t(y | x) by Bayes' rule, so this is
  ``guided_score_fn`` with an implicit classifier: scale 1 gives the conditional score, 0 the
  unconditional one, > 1 sharpens towards y. Two score calls per evaluation (one when scale is 0 or 1).
  """
  scale = _check_scale(scale)
  if scale == 1.0:
    return conditional_score_fn
  if scale == 0.0:
    return unconditional_score_fn

  def score(x, t):
    uncond = unconditional_score_fn(x, t)
    return uncond + scale * (conditional_score_fn(x, t) - uncond)

  return score
