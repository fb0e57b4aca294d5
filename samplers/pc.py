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

from samplers import common, steps
from sde_lib import SDE, ScoreFn, batch_broadcast, checks


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


def scaled_euler_maruyama(noise_scale: float) -> FunctionPredictor:
  """Euler-Maruyama on the reverse SDE with diffusion eta g(t), eta = noise_scale (``sde_lib.ReverseSDE``):
  x' = x + [f - (1 + eta^2)/2 g^2 s] dt + eta g sqrt(|dt|) z. eta = 1 is ``euler_maruyama``, eta = 0 its
  probability-flow step."""

  def step(sde, score_fn, x, t, t_next, noise, probability_flow):
    dt = t_next - t
    drift, w = sde.reverse(score_fn, probability_flow, noise_scale).sde(x, t)
    x_mean = x + drift * batch_broadcast(dt, x)
    return x_mean + batch_broadcast(w * jnp.sqrt(-dt), x) * noise, x_mean

  return FunctionPredictor(step, nfe=1, supports_probability_flow=True, supports_ladder=False)


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
def _member(kind: str, registry, protocol):
  """A check: a registry member's name, or a user object satisfying ``protocol``."""

  def check(value, where):
    if isinstance(value, str):
      return checks.choice(*sorted(registry))(value, where)
    if isinstance(value, protocol):
      return value
    raise ValueError(f"{where} must be one of {sorted(registry)} or a {protocol.__name__} object, got {value!r}")

  return checks.labelled(check, "choice", options=tuple(sorted(registry)))


@dataclasses.dataclass(frozen=True)
class PCOptions(checks.Options):
  """Options of ``get_pc_sampler`` (and of the PC steps of conditioning), with their defaults.

  predictor: a name in ``PREDICTORS`` (euler_maruyama, reverse_diffusion, ancestral_sampling, none) or a
    ``Predictor`` object. corrector: a name in ``CORRECTORS`` (langevin, ald, none) or a ``Corrector``.
  snr: the corrector's signal-to-noise ratio r. corrector_steps: corrector steps per grid time (score_sde's
  n_steps_each). num_steps: predictor steps (None: the SDE's N). t_min: the last time, in (0, T).
  denoise: finish with x = E[x(0) | x(t_min)] (1 NFE). probability_flow: predict with the probability-flow
  ODE. langevin_step_rule: "batch" (score_sde's batch-averaged step size) or "expected" (batch-independent).
  ladder: step on the SDE's discrete ladder (discrete-time models). noise_scale: (euler_maruyama only) eta of
  the reverse SDE with diffusion eta g(t), the sampling noise chosen after training (None: 1, the reverse SDE;
  0: the probability-flow ODE). checkpoint: rematerialise each step in
  the backward pass (``jax.checkpoint``: one state per step stored instead of the network's activations).
  """

  predictor: str | Predictor = checks.spec("reverse_diffusion", _member("predictor", PREDICTORS, Predictor))
  corrector: str | Corrector = checks.spec("langevin", _member("corrector", CORRECTORS, Corrector))
  snr: float = checks.spec(0.16, checks.number(0.0, open_lo=True))
  corrector_steps: int = checks.spec(1, checks.integer(1))
  num_steps: int | None = checks.spec(None, checks.optional(checks.integer(1)))
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  denoise: bool = checks.spec(True, checks.boolean)
  probability_flow: bool = checks.spec(False, checks.boolean)
  langevin_step_rule: str = checks.spec("batch", checks.choice(*LANGEVIN_STEP_RULES))
  ladder: bool = checks.spec(False, checks.boolean)
  noise_scale: float | None = checks.spec(None, checks.optional(checks.number(0.0)))
  checkpoint: bool = checks.spec(False, checks.boolean)


class PCStepper:
  """Predictor-corrector steps (``steps.Stepper``): at each grid time t_k, ``corrector_steps`` corrector
  steps, then one predictor step t_k -> t_{k+1}, on t = linspace(T, t_min, N + 1) or the SDE's ladder."""

  def __init__(self, sde: SDE, shape, options: PCOptions):
    self.sde, self.shape, self.options = sde, common.check_shape(shape), options
    o = options
    self.pred = o.predictor if not isinstance(o.predictor, str) else PREDICTORS[o.predictor]
    if o.noise_scale is not None:
      if o.predictor != "euler_maruyama":
        raise ValueError(f"noise_scale needs predictor='euler_maruyama', got predictor={o.predictor!r}")
      self.pred = scaled_euler_maruyama(o.noise_scale)
    self.corr = o.corrector if not isinstance(o.corrector, str) else CORRECTORS[o.corrector]
    self.N = sde.N if o.num_steps is None else o.num_steps
    self.t_min = common.check_t_min(sde, o.t_min)
    if o.probability_flow and not self.pred.supports_probability_flow:
      raise ValueError(f"predictor {o.predictor!r} has no probability-flow form; use euler_maruyama or "
                       f"reverse_diffusion")
    if o.ladder and self.N != sde.N:
      raise ValueError(f"num_steps must equal the SDE's ladder size {sde.N} when ladder=True, got {self.N}")
    if o.ladder and not self.pred.supports_ladder:
      raise ValueError(f"predictor {o.predictor!r} has no ladder step; use reverse_diffusion or ancestral_sampling")
    self.start, self.stop, self.checkpoint = 0, self.N, o.checkpoint
    self.step_nfe = self.pred.nfe + o.corrector_steps * self.corr.nfe
    self.nfe = self.N * self.step_nfe + int(o.denoise and not o.ladder)

  def times(self):
    if self.options.ladder:
      return self.sde.discrete_time(jnp.arange(self.N - 1, -2, -1))
    return jnp.linspace(self.sde.t_end, self.t_min, self.N + 1)

  def init(self, score_fn, x, keys):
    return x, x

  def step(self, score_fn, k, state, keys):
    o, sde, shape = self.options, self.sde, self.shape
    x, _ = state
    times, batch = self.times(), shape[0]
    t = common.full_time(times[k], batch)
    t_next = None if o.ladder else common.full_time(times[k + 1], batch)     # None: the ladder's step i -> i-1
    step_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, k + 1))(keys)

    def correct(j, x):
      noise = common.per_sample_normal(step_keys, j + 1, shape)
      return self.corr(sde, score_fn, x, t, noise, o.snr, o.langevin_step_rule)[0]

    if self.corr.nfe:
      x = jax.lax.fori_loop(0, o.corrector_steps, correct, x)
    noise = common.per_sample_normal(step_keys, 0, shape)
    return self.pred(sde, score_fn, x, t, t_next, noise, o.probability_flow)

  def x_of(self, state, k):
    return state[0]

  def with_x(self, state, k, x):
    return x, x

  def denoised_of(self, state):
    return None

  def finish(self, score_fn, state, keys):
    x, x_mean = state
    if self.options.denoise and self.options.ladder:
      return x_mean                                                          # score_sde's noise_removal
    if self.options.denoise:
      return common.tweedie_denoise(self.sde, score_fn, x, common.full_time(self.t_min, self.shape[0]))
    return x

  def transition(self, score_fn, k, x):
    """The predictor's Gaussian reverse transition from grid time k: (mean [B, ...], std [B]), for the
    particle methods; only for the named predictors in ``GAUSSIAN_PREDICTORS`` and no ladder."""
    name = self.options.predictor
    if name not in GAUSSIAN_PREDICTORS or self.options.ladder or self.options.probability_flow:
      raise ValueError(f"the reverse transition density is known for predictors {list(GAUSSIAN_PREDICTORS)} off "
                       f"the ladder and without probability_flow, got {name!r}")
    times, batch = self.times(), x.shape[0]
    t, t_next = common.full_time(times[k], batch), common.full_time(times[k + 1], batch)
    _, mean = self.pred(self.sde, score_fn, x, t, t_next, jnp.zeros_like(x), False)
    if name == "reverse_diffusion":
      std = self.sde.discretize(x, t, t_next)[1]                     # rev_G = G (eq. 46)
    elif name == "euler_maruyama":
      eta = 1.0 if self.options.noise_scale is None else self.options.noise_scale
      std = eta * self.sde.sde(x, t)[1] * jnp.sqrt(t - t_next)       # eta g(t) sqrt(|dt|) (seed 004 eq. 3)
    else:
      std = self.sde.ancestral_step_coefs(t, t_next)[2]              # the DDPM posterior std
    return mean, std


# The predictors whose reverse transition is Gaussian with a known std (``PCStepper.transition``).
GAUSSIAN_PREDICTORS = ("reverse_diffusion", "ancestral_sampling", "euler_maruyama")


def get_pc_sampler(sde: SDE, shape, options: PCOptions | None = None, **overrides):
  """Predictor-corrector sampling from T down to t_min (Song et al. 2021, Alg. 1-5; ``PCOptions``).

  At each grid time t_k (k = 0..num_steps-1): ``corrector_steps`` corrector steps at t_k, then one
  predictor step t_k -> t_{k+1}, with t = linspace(T, t_min, num_steps + 1). ``denoise`` adds
  Tweedie's step at t_min.

  ``ladder=True`` samples a discrete-ladder model on its own ladder, as score_sde does: the grid is
  the ladder's times t_i = i T / (N - 1), i = N-1..0 (N = sde.N), each predictor step goes from level
  i to level i - 1 with the ladder's kernel (``SDE.transition_coefs``; level -1 is clean data), so the
  network is queried only at the levels it was trained on, and ``denoise`` returns the last step's
  mean (score_sde's noise_removal; no extra NFE) instead of a Tweedie step at t_min. It needs a
  predictor with a ladder step (reverse_diffusion, ancestral_sampling or none) and num_steps = sde.N.

  Arguments: ``options`` (a ``PCOptions``; None: the defaults) and/or its fields as keywords.
  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)`` with
  nfe = num_steps (predictor nfe + corrector_steps corrector nfe) + denoise (not on the ladder).
  """
  return steps.sampler_from_stepper(PCStepper(sde, shape, PCOptions.build(options, **overrides)))
