"""The step protocol every fixed-grid sampler implements, and the one loop that runs it.

A ``Stepper`` is one sampling method bound to an SDE, a sample shape and its options. It works in its own
variable (x for PC, x_hat = x / a(t) for the sigma-grid methods) and exposes the data-space sample at every
level, so the loop (and conditioning, which acts between steps) never needs to know which. The loop:

    x = prior draw;  state = init(score_fn, x, keys)           (level ``start``)
    for k in start .. stop - 1:  state = step(score_fn, k, state, keys)     (level k -> k + 1)
                                 callback(k + 1, x, t_{k+1}, denoised) may replace x
    x = finish(score_fn, state, keys)                           (any last step and the final denoising)

(diffrax's ``AbstractSolver.init/step`` and k-diffusion's ``callback`` are the same idea.) The adaptive
probability-flow ODE (``samplers.ode``) is diffrax's own loop and is not a Stepper.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import ScoreFn

# callback(level k, x [B, ...] at level k, t scalar, denoised [B, ...] or None) -> new x, or None to keep x.
Callback = Callable[[jax.Array, jax.Array, jax.Array, Any], Any]


@runtime_checkable
class Stepper(Protocol):
  """One method's steps on its grid of levels 0 (t = T) .. ``stop`` (the last level before ``finish``).

  Attributes:
    sde, shape: the SDE and the sample shape [B, ...].
    start, stop: the loop runs ``step`` for k in [start, stop); ``init`` may take steps itself (start > 0).
    nfe: score evaluations of one whole run (init + steps + finish), per sample.
    step_nfe: score evaluations of one ``step``.
    checkpoint: rematerialise each step in the backward pass (``jax.checkpoint``).
  """

  sde: Any
  shape: tuple
  start: int
  stop: int
  nfe: int
  step_nfe: int
  checkpoint: bool

  def times(self) -> jax.Array:
    """The time of every level, [stop + 1] (traced: call inside the sampled function)."""

  def init(self, score_fn: ScoreFn, x: jax.Array, keys: jax.Array) -> Any:
    """The state at level ``start`` from a prior draw x [B, ...] at t = T; keys: per-sample keys [B]."""

  def step(self, score_fn: ScoreFn, k, state, keys: jax.Array) -> Any:
    """The state at level k + 1 from the state at level k."""

  def x_of(self, state, k) -> jax.Array:
    """The data-space sample [B, ...] of a state at level k."""

  def with_x(self, state, k, x: jax.Array) -> Any:
    """The state at level k with its sample replaced by the data-space x (conditioning)."""

  def denoised_of(self, state) -> jax.Array | None:
    """The last denoised estimate E[x_0 | x_k] the method computed, or None if it computes none."""

  def finish(self, score_fn: ScoreFn, state, keys: jax.Array) -> jax.Array:
    """The sample [B, ...] from the state at level ``stop``."""


class WrappedStepper:
  """A ``Stepper`` that runs ``inner``'s steps and changes some of them (conditioning between or inside steps):
  every member is the inner stepper's until a subclass overrides it; nfe and step_nfe too."""

  def __init__(self, inner: Stepper):
    self.inner = inner
    self.sde, self.shape = inner.sde, inner.shape
    self.start, self.stop, self.checkpoint = inner.start, inner.stop, inner.checkpoint
    self.nfe, self.step_nfe = inner.nfe, inner.step_nfe

  def times(self):
    return self.inner.times()

  def init(self, score_fn, x, keys):
    return self.inner.init(score_fn, x, keys)

  def step(self, score_fn, k, state, keys):
    return self.inner.step(score_fn, k, state, keys)

  def x_of(self, state, k):
    return self.inner.x_of(state, k)

  def with_x(self, state, k, x):
    return self.inner.with_x(state, k, x)

  def denoised_of(self, state):
    return self.inner.denoised_of(state)

  def finish(self, score_fn, state, keys):
    return self.inner.finish(score_fn, state, keys)


def prior_draw(sde, shape, keys: jax.Array) -> jax.Array:
  """x(T) ~ N(0, prior_std^2 I), sample b from its own key (``common.per_sample_normal`` stream 0)."""
  return sde.prior_std * common.per_sample_normal(keys, 0, shape)


def run(stepper: Stepper, key: jax.Array, score_fn: ScoreFn, *, callback: Callback | None = None,
        x_init: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs ``stepper`` from a prior draw (or ``x_init`` at t = T): ``(x [shape], nfe)``.

  ``callback(k, x, t, denoised)`` is called after every step at the new level k (and after ``init`` when it
  took steps); returning an array replaces the sample (replacement conditioning), None keeps it. For
  progress or trajectories inside jit, use ``jax.debug.callback`` in it.
  """
  batch = stepper.shape[0]
  keys = common.per_sample_keys(key, batch)
  x = prior_draw(stepper.sde, stepper.shape, keys) if x_init is None else x_init
  state = stepper.init(score_fn, x, keys)
  times = stepper.times() if callback is not None else None

  def notify(k, state):
    new = callback(k, stepper.x_of(state, k), times[k], stepper.denoised_of(state))
    return state if new is None else stepper.with_x(state, k, new)

  if callback is not None and stepper.start > 0:
    state = notify(stepper.start, state)

  def body(k, state):
    state = stepper.step(score_fn, k, state, keys)
    return state if callback is None else notify(k + 1, state)

  body = jax.checkpoint(body) if stepper.checkpoint else body                 # remat: memory for compute
  state = jax.lax.fori_loop(stepper.start, stepper.stop, body, state)
  return stepper.finish(score_fn, state, keys), jnp.asarray(stepper.nfe, jnp.int32)


def sampler_from_stepper(stepper: Stepper):
  """``sample_fn(key, score_fn) -> (x [shape], nfe)`` running ``stepper`` with the one loop."""

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    return run(stepper, key, score_fn)

  return sample_fn
