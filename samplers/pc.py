"""Predictor-corrector samplers (Song et al. 2021, Alg. 1-5).

A predictor takes one step of the reverse-time SDE from t to t_next < t; a corrector runs Langevin
MCMC targeting p_t at a fixed t. ``none`` members make predictor-only and corrector-only samplers
special cases. ``PREDICTORS`` and ``CORRECTORS`` are read-only; to use your own, pass an object
satisfying the ``Predictor`` / ``Corrector`` protocol (e.g. ``FunctionPredictor(fn, nfe=1)``) as
``predictor=`` / ``corrector=`` instead of a name.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import SDE, ScoreFn, batch_broadcast


@runtime_checkable
class Predictor(Protocol):
  """``predictor(sde, score_fn, x, t, t_next, noise, probability_flow) -> (x, x_mean)``.

  t, t_next: [B]; ``t_next=None`` asks for the ladder's step from level i(t) to i(t) - 1 (only if
  ``supports_ladder``). ``nfe``: score evaluations per call.
  """

  nfe: int
  supports_probability_flow: bool
  supports_ladder: bool

  def __call__(self, sde, score_fn, x, t, t_next, noise, probability_flow): ...


@runtime_checkable
class Corrector(Protocol):
  """``corrector(sde, score_fn, x, t, noise, snr, langevin_step_rule) -> (x, x_mean)``; ``nfe`` per call."""

  nfe: int

  def __call__(self, sde, score_fn, x, t, noise, snr, langevin_step_rule): ...


@dataclasses.dataclass(frozen=True)
class FunctionPredictor:
  """A predictor from a function with ``Predictor.__call__``'s signature."""

  fn: Callable
  nfe: int = 1
  supports_probability_flow: bool = True
  supports_ladder: bool = True

  def __call__(self, *args):
    return self.fn(*args)


@dataclasses.dataclass(frozen=True)
class FunctionCorrector:
  """A corrector from a function with ``Corrector.__call__``'s signature."""

  fn: Callable
  nfe: int = 1

  def __call__(self, *args):
    return self.fn(*args)


LANGEVIN_STEP_RULES = ("batch", "expected")


# ------------------------------------------------------------------------------- predictors
def euler_maruyama(sde, score_fn, x, t, t_next, noise, probability_flow):
  """x' = x + [f - g^2 s] dt + g sqrt(|dt|) z with dt = t_next - t < 0 (seed 004 eq. 3)."""
  dt = t_next - t
  drift, g = sde.reverse(score_fn, probability_flow).sde(x, t)
  x_mean = x + drift * batch_broadcast(dt, x)
  return x_mean + batch_broadcast(g * jnp.sqrt(-dt), x) * noise, x_mean


def reverse_diffusion(sde, score_fn, x, t, t_next, noise, probability_flow):
  """The reverse of the forward step t_next -> t: x' = x - [f - G^2 s] + G z (Song et al. 2021 eq. 46)."""
  rev_f, rev_G = sde.reverse(score_fn, probability_flow).discretize(x, t, t_next)
  x_mean = x - rev_f
  return x_mean + batch_broadcast(rev_G, x) * noise, x_mean


def ancestral_sampling(sde, score_fn, x, t, t_next, noise, probability_flow):
  """The DDPM posterior step with Tweedie's x_0 (see ``SDE.ancestral_step_coefs``; eq. 47 for VE)."""
  inv_alpha, v, std = sde.ancestral_step_coefs(t, t_next)
  x_mean = batch_broadcast(inv_alpha, x) * (x + batch_broadcast(v, x) * score_fn(x, t))
  return x_mean + batch_broadcast(std, x) * noise, x_mean


def no_predictor(sde, score_fn, x, t, t_next, noise, probability_flow):
  return x, x


# ------------------------------------------------------------------------------- correctors
def _langevin_step_size(sde, t, grad, noise, snr, langevin_step_rule):
  """eps = 2 alpha (snr |z| / |s|)^2 (Song et al. 2021 Alg. 4/5), [B].

  ``"batch"`` (score_sde's rule): |z| and |s| are averaged over the batch, which couples a sample
  to its batch-mates. ``"expected"``: |z| ~ sqrt(d) and |s| ~ sqrt(d)/s(t), so eps = 2 alpha (snr s(t))^2
  -- batch-independent, identical to score_sde's annealed-Langevin corrector. Per-sample norms
  are not offered: in low dimension |s| -> 0 at a mode centre and the step explodes.
  """
  alpha = sde.langevin_alpha(t)
  if langevin_step_rule == "expected":
    return 2 * alpha * jnp.square(snr * sde.marginal_coefs(t)[1])
  flat = lambda v: v.reshape(v.shape[0], -1)
  grad_norm = jnp.mean(jnp.linalg.norm(flat(grad), axis=-1))
  noise_norm = jnp.mean(jnp.linalg.norm(flat(noise), axis=-1))
  return 2 * alpha * jnp.square(snr * noise_norm / grad_norm)


def langevin(sde, score_fn, x, t, noise, snr, langevin_step_rule):
  """One Langevin MCMC step x' = x + eps s(x, t) + sqrt(2 eps) z targeting p_t (seed 001)."""
  grad = score_fn(x, t)
  eps = batch_broadcast(_langevin_step_size(sde, t, grad, noise, snr, langevin_step_rule), x)
  x_mean = x + eps * grad
  return x_mean + jnp.sqrt(2 * eps) * noise, x_mean


def annealed_langevin(sde, score_fn, x, t, noise, snr, langevin_step_rule):
  """score_sde's annealed-Langevin corrector: the Langevin step with eps = 2 alpha (snr s(t))^2."""
  return langevin(sde, score_fn, x, t, noise, snr, "expected")


def no_corrector(sde, score_fn, x, t, noise, snr, langevin_step_rule):
  return x, x


PREDICTORS: types.MappingProxyType = types.MappingProxyType({
    "euler_maruyama": FunctionPredictor(euler_maruyama, supports_ladder=False),
    "reverse_diffusion": FunctionPredictor(reverse_diffusion),
    "ancestral_sampling": FunctionPredictor(ancestral_sampling, supports_probability_flow=False),
    "none": FunctionPredictor(no_predictor, nfe=0),
})
CORRECTORS: types.MappingProxyType = types.MappingProxyType({
    "langevin": FunctionCorrector(langevin),
    "ald": FunctionCorrector(annealed_langevin),
    "none": FunctionCorrector(no_corrector, nfe=0),
})


# ----------------------------------------------------------------------------- the sampler
def _resolve(registry, protocol, kind: str, value):
  """A registry member by name, or a user object satisfying ``protocol``."""
  if isinstance(value, str):
    return common.check_choice(kind, value, registry) and registry[value]
  if isinstance(value, protocol):
    return value
  raise ValueError(f"{kind} must be one of {sorted(registry)} or a {protocol.__name__} object, got {value!r}")


def get_pc_sampler(sde: SDE, shape, *, predictor: str | Predictor = "reverse_diffusion",
                   corrector: str | Corrector = "langevin", snr: float = 0.16, corrector_steps: int = 1,
                   num_steps: int | None = None, t_min: float = 1e-3, denoise: bool = True,
                   probability_flow: bool = False, langevin_step_rule: str = "batch", ladder: bool = False,
                   checkpoint: bool = False):
  """Predictor-corrector sampling from T down to t_min on the uniform grid of num_steps steps.

  At each grid time t_k (k = 0..num_steps-1): ``corrector_steps`` corrector steps at t_k, then one
  predictor step t_k -> t_{k+1}, with t = linspace(T, t_min, num_steps + 1). ``denoise`` adds
  Tweedie's step at t_min.

  ``ladder=True`` samples a discrete-ladder model on its own ladder, as score_sde does: the grid is
  the ladder's times t_i = i T / (N - 1), i = N-1..0 (N = sde.N), each predictor step goes from level
  i to level i - 1 with the ladder's kernel (``SDE.transition_coefs``; level -1 is clean data), so the
  network is queried only at the levels it was trained on, and ``denoise`` returns the last step's
  mean (score_sde's noise_removal; no extra NFE) instead of a Tweedie step at t_min.

  Arguments:
    predictor: a name in ``PREDICTORS`` (euler_maruyama, reverse_diffusion, ancestral_sampling, none)
      or a ``Predictor`` object.
    corrector: a name in ``CORRECTORS`` (langevin, ald, none) or a ``Corrector`` object.
    snr: the corrector's signal-to-noise ratio r, > 0.
    corrector_steps: corrector steps per grid time (score_sde's n_steps_each).
    num_steps: number of predictor steps (default: sde.N).
    t_min: the last time, in (0, T).
    denoise: finish with x = E[x(0) | x(t_min)] (1 NFE).
    probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
    langevin_step_rule: ``"batch"`` (score_sde's batch-averaged step size) or ``"expected"``
      (batch-independent: a sample does not depend on its batch-mates).
    ladder: step on the SDE's discrete ladder (see above); needs a predictor with a ladder step
      (reverse_diffusion, ancestral_sampling or none) and num_steps = sde.N.
    checkpoint: rematerialise each grid step in the backward pass (``jax.checkpoint`` on the loop
      body): ``jax.grad`` through the sampler then stores one state per step instead of the score
      network's activations, at the price of a second forward pass (see benchmarks/results/backward_memory.md).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)`` with
  nfe = num_steps (predictor nfe + corrector_steps corrector nfe) + denoise (not on the ladder).
  """
  shape = common.check_shape(shape)
  pred = _resolve(PREDICTORS, Predictor, "predictor", predictor)
  corr = _resolve(CORRECTORS, Corrector, "corrector", corrector)
  common.check_positive("snr", snr)
  n_corr = common.check_steps("corrector_steps", corrector_steps)
  N = common.check_steps("num_steps", sde.N if num_steps is None else num_steps)
  t_min = common.check_t_min(sde, t_min)
  common.check_choice("langevin_step_rule", langevin_step_rule, LANGEVIN_STEP_RULES)
  if probability_flow and not pred.supports_probability_flow:
    raise ValueError(f"predictor {predictor!r} has no probability-flow form; use euler_maruyama or reverse_diffusion")
  if ladder and N != sde.N:
    raise ValueError(f"num_steps must equal the SDE's ladder size {sde.N} when ladder=True, got {N}")
  if ladder and not pred.supports_ladder:
    raise ValueError(f"predictor {predictor!r} has no ladder step; use reverse_diffusion or ancestral_sampling")
  batch = shape[0]
  nfe = N * (pred.nfe + n_corr * corr.nfe) + int(denoise and not ladder)

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    keys = common.per_sample_keys(key, batch)
    times = sde.discrete_time(jnp.arange(N - 1, -2, -1)) if ladder else jnp.linspace(sde.T, t_min, N + 1)
    x = sde.prior_std * common.per_sample_normal(keys, 0, shape)

    def grid_step(k, carry):
      x, _ = carry
      t = common.full_time(times[k], batch)
      t_next = None if ladder else common.full_time(times[k + 1], batch)     # None: the ladder's step i -> i-1
      step_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, k + 1))(keys)

      def correct(j, x):
        noise = common.per_sample_normal(step_keys, j + 1, shape)
        return corr(sde, score_fn, x, t, noise, snr, langevin_step_rule)[0]

      if corr.nfe:
        x = jax.lax.fori_loop(0, n_corr, correct, x)
      noise = common.per_sample_normal(step_keys, 0, shape)
      return pred(sde, score_fn, x, t, t_next, noise, probability_flow)

    step = jax.checkpoint(grid_step) if checkpoint else grid_step            # remat: memory for compute
    x, x_mean = jax.lax.fori_loop(0, N, step, (x, x))
    if denoise and ladder:
      x = x_mean
    elif denoise:
      x = common.tweedie_denoise(sde, score_fn, x, common.full_time(t_min, batch))
    return x, jnp.asarray(nfe, jnp.int32)

  return sample_fn
