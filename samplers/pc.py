"""Predictor-corrector samplers (Song et al. 2021, Alg. 1-5), with user-extensible registries.

A predictor takes one step of the reverse-time SDE from t to t_next < t; a corrector runs Langevin
MCMC targeting p_t at a fixed t. ``none`` members make predictor-only and corrector-only samplers
special cases. Register a new one with ``@register_predictor("name", nfe=...)`` or
``@register_corrector("name", nfe=...)``; its function has the signature of the built-ins below.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import SDE, ScoreFn, batch_broadcast


@dataclasses.dataclass(frozen=True)
class Predictor:
  """``fn(sde, score_fn, x, t, t_next, noise, probability_flow) -> (x, x_mean)``; ``nfe`` per step."""

  fn: Callable
  nfe: int
  supports_probability_flow: bool = True


@dataclasses.dataclass(frozen=True)
class Corrector:
  """``fn(sde, score_fn, x, t, noise, snr, langevin_step) -> (x, x_mean)``; ``nfe`` per step."""

  fn: Callable
  nfe: int


PREDICTORS: dict[str, Predictor] = {}
CORRECTORS: dict[str, Corrector] = {}
LANGEVIN_STEPS = ("batch", "expected")


def register_predictor(name: str, nfe: int = 1, supports_probability_flow: bool = True):
  """Decorator adding a predictor function to ``PREDICTORS`` under ``name``."""
  def wrap(fn):
    PREDICTORS[name] = Predictor(fn, nfe, supports_probability_flow)
    return fn
  return wrap


def register_corrector(name: str, nfe: int = 1):
  """Decorator adding a corrector function to ``CORRECTORS`` under ``name``."""
  def wrap(fn):
    CORRECTORS[name] = Corrector(fn, nfe)
    return fn
  return wrap


# ------------------------------------------------------------------------------- predictors
@register_predictor("euler_maruyama")
def euler_maruyama(sde, score_fn, x, t, t_next, noise, probability_flow):
  """x' = x + [f - g^2 s] dt + g sqrt(|dt|) z with dt = t_next - t < 0 (seed 004 eq. 3)."""
  dt = t_next - t
  drift, g = sde.reverse(score_fn, probability_flow).sde(x, t)
  x_mean = x + drift * batch_broadcast(dt, x)
  return x_mean + batch_broadcast(g * jnp.sqrt(-dt), x) * noise, x_mean


@register_predictor("reverse_diffusion")
def reverse_diffusion(sde, score_fn, x, t, t_next, noise, probability_flow):
  """The reverse of the forward step t_next -> t: x' = x - [f - G^2 s] + G z (Song et al. 2021 eq. 46)."""
  rev_f, rev_G = sde.reverse(score_fn, probability_flow).discretize(x, t, t_next)
  x_mean = x - rev_f
  return x_mean + batch_broadcast(rev_G, x) * noise, x_mean


@register_predictor("ancestral_sampling", supports_probability_flow=False)
def ancestral_sampling(sde, score_fn, x, t, t_next, noise, probability_flow):
  """The DDPM posterior step with Tweedie's x_0 (see ``SDE.ancestral_step_coefs``; eq. 47 for VE)."""
  inv_alpha, v, std = sde.ancestral_step_coefs(t, t_next)
  x_mean = batch_broadcast(inv_alpha, x) * (x + batch_broadcast(v, x) * score_fn(x, t))
  return x_mean + batch_broadcast(std, x) * noise, x_mean


@register_predictor("none", nfe=0)
def no_predictor(sde, score_fn, x, t, t_next, noise, probability_flow):
  return x, x


# ------------------------------------------------------------------------------- correctors
def _langevin_step_size(sde, t, grad, noise, snr, langevin_step):
  """eps = 2 alpha (snr |z| / |s|)^2 (Song et al. 2021 Alg. 4/5), [B].

  ``"batch"`` (score_sde's rule): |z| and |s| are averaged over the batch, which couples a sample
  to its batch-mates. ``"expected"``: |z| ~ sqrt(d) and |s| ~ sqrt(d)/s(t), so eps = 2 alpha (snr s(t))^2
  -- batch-independent, identical to score_sde's annealed-Langevin corrector. Per-sample norms
  are not offered: in low dimension |s| -> 0 at a mode centre and the step explodes.
  """
  alpha = sde.langevin_alpha(t)
  if langevin_step == "expected":
    return 2 * alpha * jnp.square(snr * sde.marginal_coefs(t)[1])
  flat = lambda v: v.reshape(v.shape[0], -1)
  grad_norm = jnp.mean(jnp.linalg.norm(flat(grad), axis=-1))
  noise_norm = jnp.mean(jnp.linalg.norm(flat(noise), axis=-1))
  return 2 * alpha * jnp.square(snr * noise_norm / grad_norm)


@register_corrector("langevin")
def langevin(sde, score_fn, x, t, noise, snr, langevin_step):
  """One Langevin MCMC step x' = x + eps s(x, t) + sqrt(2 eps) z targeting p_t (seed 001)."""
  grad = score_fn(x, t)
  eps = batch_broadcast(_langevin_step_size(sde, t, grad, noise, snr, langevin_step), x)
  x_mean = x + eps * grad
  return x_mean + jnp.sqrt(2 * eps) * noise, x_mean


@register_corrector("ald")
def annealed_langevin(sde, score_fn, x, t, noise, snr, langevin_step):
  """score_sde's annealed-Langevin corrector: the Langevin step with eps = 2 alpha (snr s(t))^2."""
  return langevin(sde, score_fn, x, t, noise, snr, "expected")


@register_corrector("none", nfe=0)
def no_corrector(sde, score_fn, x, t, noise, snr, langevin_step):
  return x, x


# ----------------------------------------------------------------------------- the sampler
def _lookup(registry: dict, kind: str, name: str):
  if name not in registry:
    raise ValueError(f"{kind} must be one of {sorted(registry)}, got {name!r}")
  return registry[name]


def get_pc_sampler(sde: SDE, shape, *, predictor: str = "reverse_diffusion", corrector: str = "langevin",
                   snr: float = 0.16, n_steps: int = 1, N: int | None = None, eps: float = 1e-3,
                   denoise: bool = True, probability_flow: bool = False, langevin_step: str = "batch",
                   ladder: bool = False):
  """Predictor-corrector sampling from T down to eps on the uniform grid of N steps.

  At each grid time t_k (k = 0..N-1): ``n_steps`` corrector steps at t_k, then one predictor step
  t_k -> t_{k+1}, with t = linspace(T, eps, N + 1). ``denoise`` adds Tweedie's step at eps.

  ``ladder=True`` samples a discrete-ladder model on its own ladder, as score_sde does: the grid is
  the ladder's times t_i = i T / (N - 1), i = N-1..0 (N = sde.N), each predictor step goes from level
  i to level i - 1 with the ladder's kernel (``SDE.transition_coefs``; level -1 is clean data), so the
  network is queried only at the levels it was trained on, and ``denoise`` returns the last step's
  mean (score_sde's noise_removal; no extra NFE) instead of a Tweedie step at eps.

  Arguments:
    predictor: a name in ``PREDICTORS`` (euler_maruyama, reverse_diffusion, ancestral_sampling, none).
    corrector: a name in ``CORRECTORS`` (langevin, ald, none).
    snr: the corrector's signal-to-noise ratio r, > 0.
    n_steps: corrector steps per grid time.
    N: number of predictor steps (default: sde.N).
    eps: the last time, in (0, T).
    denoise: finish with x = E[x(0) | x(eps)] (1 NFE).
    probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
    langevin_step: ``"batch"`` (score_sde's batch-averaged step size) or ``"expected"``
      (batch-independent: a sample does not depend on its batch-mates).
    ladder: step on the SDE's discrete ladder (see above); needs a ladder-step predictor
      (reverse_diffusion, ancestral_sampling or none) and N = sde.N.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)`` with
  nfe = N (predictor nfe + n_steps corrector nfe) + denoise (no + denoise on the ladder).
  """
  shape = common.check_shape(shape)
  pred = _lookup(PREDICTORS, "predictor", predictor)
  corr = _lookup(CORRECTORS, "corrector", corrector)
  common.check_positive("snr", snr)
  n_steps = common.check_steps("n_steps", n_steps)
  N = common.check_steps("N", sde.N if N is None else N)
  eps = common.check_eps(sde, eps)
  common.check_choice("langevin_step", langevin_step, LANGEVIN_STEPS)
  if probability_flow and not pred.supports_probability_flow:
    raise ValueError(f"predictor {predictor!r} has no probability-flow form; use euler_maruyama or reverse_diffusion")
  if ladder and N != sde.N:
    raise ValueError(f"N must equal the SDE's ladder size {sde.N} when ladder=True, got {N}")
  if ladder and predictor == "euler_maruyama":
    raise ValueError("predictor 'euler_maruyama' has no ladder step; use reverse_diffusion or ancestral_sampling")
  batch = shape[0]
  nfe = N * (pred.nfe + n_steps * corr.nfe) + int(denoise and not ladder)

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    keys = common.per_sample_keys(key, batch)
    times = sde.discrete_time(jnp.arange(N - 1, -2, -1)) if ladder else jnp.linspace(sde.T, eps, N + 1)
    x = sde.prior_std * common.per_sample_normal(keys, 0, shape)

    def grid_step(k, carry):
      x, _ = carry
      t = common.full_time(times[k], batch)
      t_next = None if ladder else common.full_time(times[k + 1], batch)     # None: the ladder's step i -> i-1
      step_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, k + 1))(keys)

      def correct(j, x):
        noise = common.per_sample_normal(step_keys, j + 1, shape)
        return corr.fn(sde, score_fn, x, t, noise, snr, langevin_step)[0]

      if corr.nfe:
        x = jax.lax.fori_loop(0, n_steps, correct, x)
      noise = common.per_sample_normal(step_keys, 0, shape)
      return pred.fn(sde, score_fn, x, t, t_next, noise, probability_flow)

    x, x_mean = jax.lax.fori_loop(0, N, grid_step, (x, x))
    if denoise and ladder:
      x = x_mean
    elif denoise:
      x = common.tweedie_denoise(sde, score_fn, x, common.full_time(eps, batch))
    return x, jnp.asarray(nfe, jnp.int32)

  return sample_fn
