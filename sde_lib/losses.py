"""Score-matching losses: denoising (continuous and discrete ladders) and sliced score matching.

Every loss is built once from an SDE and options and then is a pure function
``loss_fn(key, score_fn, x) -> scalar`` (the batch mean). ``get_per_example_loss_fn`` returns the
unreduced ``[B]`` values the mean is taken over, for callers that weight or test them.

Reductions follow score_sde: ``reduce_mean=True`` averages the squared error over the data
dimensions; ``False`` takes half its sum, so that the loss is J = E[lambda/2 |s_theta - target|^2].
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from sde_lib import checks
from sde_lib.base import SDE, ScoreFn, batch_broadcast, check_positive_int
from sde_lib.parameterization import velocity_weight

LossFn = Callable[[jax.Array, ScoreFn, jax.Array], jax.Array]

METHODS = ("dsm", "ssm")
PROJECTIONS = ("rademacher", "gaussian")
WEIGHTINGS = ("score", "likelihood", "velocity")


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """One draw of the forward kernel: x_t = a x + s z at times t. t, a, s: [B]; z, x_t: like x."""

  t: jax.Array
  z: jax.Array
  a: jax.Array
  s: jax.Array
  x_t: jax.Array


def perturb(key: jax.Array, sde: SDE, x: jax.Array, *, t_min: float = 1e-5, continuous: bool = True) -> Perturbation:
  """Draws t and z and perturbs a batch x through the SDE's kernel.

  ``continuous``: t ~ U(t_min, T) and (a, s) = marginal_coefs(t). Otherwise a ladder level i is drawn
  uniformly from 0..N-1, t = t_i and (a, s) = (a_i, s_i) of ``sde.discrete_coefs`` (SMLD / DDPM).
  """
  t_key, z_key = jax.random.split(key)
  batch = x.shape[0]
  if continuous:
    t = jax.random.uniform(t_key, (batch,), minval=t_min, maxval=sde.T)
    a, s = sde.marginal_coefs(t)
  else:
    t = sde.discrete_time(jax.random.randint(t_key, (batch,), 0, sde.N))
    a, s = sde.discrete_marginal(t)
  z = jax.random.normal(z_key, x.shape)
  return Perturbation(t, z, a, s, batch_broadcast(a, x) * x + batch_broadcast(s, x) * z)


def _reduce(v: jax.Array, reduce_mean: bool) -> jax.Array:
  """Mean, or half the sum, over all but the batch axis: [B, ...] -> [B]."""
  v = v.reshape(v.shape[0], -1)
  return jnp.mean(v, axis=1) if reduce_mean else 0.5 * jnp.sum(v, axis=1)


def get_per_example_loss_fn(
    sde: SDE,
    method: str = "dsm",
    *,
    continuous: bool = True,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    weighting: str | None = None,
    t_min: float = 1e-5,
    projection: str = "rademacher",
    n_projections: int = 1,
    variance_reduction: bool = True,
    eps: float | None = None,
) -> LossFn:
  """Builds ``loss_fn(key, score_fn, x) -> [B]`` of per-example losses.

  Arguments:
    sde: the forward SDE.
    method: ``"dsm"``, denoising score matching (Vincent 2011; seed 000), whose regression target is
      the kernel's score -z/s; or ``"ssm"``, sliced score matching (Song et al. 2019; seeds 001/002)
      on the perturbed marginals p_t, which needs no kernel and so no knowledge of the noise.
    continuous: t ~ U(t_min, T) (Song et al. 2021 eq. 7). If False (``"dsm"`` only), the discrete
      ladder loss over N levels: on VE this is the SMLD/NCSN loss with lambda(sigma_i) = sigma_i^2
      (Song & Ermon 2019 eq. 6), on VP the DDPM epsilon loss (Ho et al. 2020 eq. 14).
    reduce_mean: average over data dimensions instead of half the sum.
    weighting: lambda(t) of J = E[lambda/2 |s_theta - target|^2]: "score" s(t)^2 (Song et al. 2021 eq. 7's
      default), "likelihood" g(t)^2 (Song et al. 2021b, Thm. 1), or "velocity" s^2 ((a s' - a' s) / a)^2, under
      which J is half the conditional flow-matching loss E|v_theta - (a' x0 + s' z)|^2 (Lipman et al. 2023)
      of the model's velocity (its mean over dimensions with reduce_mean) (``sde_lib.parameterization.velocity_weight``).
    likelihood_weighting: True is weighting="likelihood" (score_sde's flag).
    t_min: smallest time, in (0, T) (``eps``, score_sde's name, is accepted too).
    projection: the ``"ssm"`` projections v, Rademacher or Gaussian (E[v v^T] = I).
    n_projections: how many projections per example (``"ssm"``).
    variance_reduction: whether 1/2|s|^2 is computed in closed form (SSM-VR, Song et al. 2019 eq. 8)
      instead of 1/2 (v^T s)^2 (``"ssm"``).

  Raises:
    ValueError: an unknown method or projection, t_min outside (0, T), n_projections < 1, or an
      option the discrete loss does not have.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if likelihood_weighting and weighting not in (None, "likelihood"):
    raise ValueError(f"likelihood_weighting=True is weighting='likelihood', got weighting={weighting!r} too")
  weighting = "likelihood" if likelihood_weighting else (weighting or "score")
  checks.check_choice("weighting", weighting, WEIGHTINGS)
  t_min = checks.check_time("t_min", t_min if eps is None else eps, sde.T)
  if projection not in PROJECTIONS:
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
  check_positive_int("n_projections", n_projections)
  if not continuous and (method != "dsm" or weighting != "score"):
    raise ValueError("continuous=False (the discrete SMLD/DDPM ladder loss) supports method='dsm' "
                     f"with weighting='score', got method={method!r}, weighting={weighting!r}")

  def weight(p: Perturbation) -> jax.Array:
    """lambda(t) / s(t)^2 -- the losses below are written premultiplied by s^2."""
    if weighting == "velocity":
      return velocity_weight(sde, p.t)
    if weighting == "likelihood":
      return jnp.square(sde.diffusion(p.t) / p.s)
    return jnp.ones_like(p.s)

  def dsm(key, score_fn, x):
    # lambda/2 |score + z/s|^2 = (lambda/s^2)/2 |s score + z|^2   (target = grad log N(x_t; a x, s^2) = -z/s)
    p = perturb(key, sde, x, t_min=t_min, continuous=continuous)
    residual = batch_broadcast(p.s, x) * score_fn(p.x_t, p.t) + p.z
    return weight(p) * _reduce(jnp.square(residual), reduce_mean)

  def ssm(key, score_fn, x):
    # J = E[ lambda ( v^T grad_x(v^T s) + 1/2 (v^T s)^2 ) ], an unbiased estimate of
    # lambda (tr grad s + 1/2 |s|^2) = lambda/2 |s - grad log p_t|^2 - const   (seed 001: integration by parts)
    p_key, v_key = jax.random.split(key)
    p = perturb(p_key, sde, x, t_min=t_min)
    t = p.t

    def one_projection(v):
      s, jv = jax.jvp(lambda y: score_fn(y, t), (p.x_t,), (v,))
      flat = lambda u: u.reshape(u.shape[0], -1)
      trace_term = jnp.sum(flat(v) * flat(jv), axis=1)
      quad = 0.5 * jnp.sum(flat(s) ** 2, axis=1) if variance_reduction else 0.5 * jnp.sum(flat(v) * flat(s), axis=1) ** 2
      return trace_term + quad

    shape = (n_projections,) + x.shape
    if projection == "rademacher":
      vs = jax.random.rademacher(v_key, shape, dtype=x.dtype)
    else:
      vs = jax.random.normal(v_key, shape, dtype=x.dtype)
    value = jnp.mean(jax.lax.map(one_projection, vs), axis=0)
    dims = x[0].size
    # Premultiply by s^2 like DSM (lambda = s^2 by default); 'mean' reduction divides 1/2|.|^2 by D/2.
    value = jnp.square(p.s) * weight(p) * value
    return value * (2.0 / dims) if reduce_mean else value

  return dsm if method == "dsm" else ssm


def get_loss_fn(sde: SDE, method: str = "dsm", **options) -> LossFn:
  """Builds ``loss_fn(key, score_fn, x) -> scalar``, the batch mean of ``get_per_example_loss_fn``.

  ``options`` are those of ``get_per_example_loss_fn``.
  """
  per_example = get_per_example_loss_fn(sde, method, **options)

  def loss_fn(key: jax.Array, score_fn: ScoreFn, x: jax.Array) -> jax.Array:
    return jnp.mean(per_example(key, score_fn, x))

  return loss_fn
