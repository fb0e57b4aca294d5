"""The probability-flow ODE (Song et al. 2021 eq. 13) solved on device by diffrax.

``solve`` is the one ODE path of the project: the ODE sampler and the likelihood both call it. It is
differentiable (``jax.grad`` with respect to y0 and anything the vector field closes over, e.g. a score's
parameters) through one of diffrax's adjoints, ``ADJOINTS``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from samplers import common, steps
from sde_lib import SDE, ScoreFn, checks

# name -> (solver class, new vector-field evaluations per attempted step, evaluations at start).
# FSAL solvers reuse their last stage; counts verified at run time in tests/test_samplers.py.
SOLVERS = {
    "tsit5": (diffrax.Tsit5, 6, 1),
    "dopri5": (diffrax.Dopri5, 6, 1),
    "bosh3": (diffrax.Bosh3, 3, 1),
    "heun": (diffrax.Heun, 2, 0),
    "euler": (diffrax.Euler, 1, 0),
}
ADAPTIVE = ("tsit5", "dopri5", "bosh3", "heun")   # the ones with an embedded error estimate

# How reverse-mode gradients are taken through a solve (diffrax 0.7's adjoints):
#   recursive_checkpoint: differentiate the solver's own steps (discretise-then-optimise), exact for the
#     discrete solution, memory ~ checkpoints (online binomial checkpointing; Stumm & Walther 2010) --
#     diffrax's default; the adaptive while_loop is differentiable because max_steps bounds it.
#   backsolve: solve the continuous adjoint ODE backwards (optimise-then-discretise; Chen et al. 2018,
#     eq. 4), O(1) memory in the steps, gradients accurate only to the solver tolerance.
#   direct: differentiate a bounded while_loop directly; memory and time grow with max_steps; the only
#     one that also supports forward mode (jax.jvp).
ADJOINTS = {
    "recursive_checkpoint": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "direct": diffrax.DirectAdjoint,
}


def check_solver_options(solver: str, rtol, atol, num_steps, max_steps, adjoint: str = "recursive_checkpoint") -> None:
  common.check_choice("solver", solver, SOLVERS)
  common.check_choice("adjoint", adjoint, ADJOINTS)
  if num_steps is None:
    if solver not in ADAPTIVE:
      raise ValueError(f"solver {solver!r} has no error estimate: give num_steps, or pick one of {list(ADAPTIVE)}")
    common.check_positive("rtol", rtol)
    common.check_positive("atol", atol)
  else:
    common.check_steps("num_steps", num_steps)
  common.check_steps("max_steps", max_steps)


def solve(vector_field: Callable, y0, t0: float, t1: float, *, solver: str = "tsit5", rtol: float = 1e-5,
          atol: float = 1e-5, num_steps: int | None = None, max_steps: int = 4096,
          adjoint: str = "recursive_checkpoint"):
  """Integrates dy/dt = vector_field(t, y) from t0 to t1 (either direction) with diffrax.

  Arguments:
    vector_field: ``(t scalar, y pytree) -> dy/dt`` like y.
    solver: a name in ``SOLVERS``.
    rtol: relative tolerance of the PID step-size controller (adaptive when num_steps is None).
    atol: absolute tolerance of the PID step-size controller.
    num_steps: a fixed number of equal steps instead.
    max_steps: the most steps an adaptive solve may take (diffrax raises when it runs out); it also
      bounds the loop that ``recursive_checkpoint`` and ``direct`` differentiate.
    adjoint: how ``jax.grad`` goes through the solve, a name in ``ADJOINTS``. Gradients reach y0 and
      the arrays ``vector_field`` closes over (for ``backsolve`` these are hoisted into the term with
      ``eqx.filter_closure_convert``, since diffrax's continuous adjoint only differentiates its
      terms, y0 and args). The step sizes of an adaptive solve are not differentiated (diffrax stops
      their gradient), so its gradient differs from a finite difference by O(tolerance).

  Returns:
    (y(t1), nfe): nfe is the number of vector-field evaluations performed, an int32 scalar.
  """
  cls, per_step, at_start = SOLVERS[solver]
  if num_steps is None:
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
  else:
    controller, dt0, max_steps = diffrax.ConstantStepSize(), (t1 - t0) / num_steps, num_steps
  if adjoint == "backsolve":
    time = jnp.zeros((), jnp.result_type(t0, t1))                       # the dtype diffrax gives t
    vector_field = eqx.filter_closure_convert(vector_field, time, y0)
  sol = diffrax.diffeqsolve(diffrax.ODETerm(_Field(vector_field)), cls(), t0, t1, dt0, y0,
                            stepsize_controller=controller, max_steps=max_steps,
                            saveat=diffrax.SaveAt(t1=True), adjoint=ADJOINTS[adjoint]())
  nfe = per_step * sol.stats["num_steps"] + at_start
  return jax.tree.map(lambda v: v[0], sol.ys), jnp.asarray(nfe, jnp.int32)


class _Field(eqx.Module):
  """diffrax's ``(t, y, args) -> dy/dt`` around ``(t, y) -> dy/dt``, keeping the closure a pytree."""

  fn: Callable

  def __call__(self, t, y, args):
    return self.fn(t, y)


@dataclasses.dataclass(frozen=True)
class ODEOptions(checks.Options):
  """Options of ``get_ode_sampler``, with their defaults.

  solver: a name in ``SOLVERS``. rtol, atol: the PID controller's tolerances (adaptive steps). num_steps:
  fixed equal steps instead (None: adaptive). t_min: the last time. denoise: Tweedie's step at t_min (1 NFE).
  max_steps: the most steps an adaptive solve may take. adjoint: how ``jax.grad`` goes through the solve, a
  name in ``ADJOINTS`` (see ``solve``).
  """

  solver: str = checks.spec("tsit5", checks.choice(*sorted(SOLVERS)))
  rtol: float = checks.spec(1e-5, common.POSITIVE_FLOAT)
  atol: float = checks.spec(1e-5, common.POSITIVE_FLOAT)
  num_steps: int | None = checks.spec(None, checks.optional(checks.integer(1)))
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  denoise: bool = checks.spec(True, checks.boolean)
  max_steps: int = checks.spec(4096, checks.integer(1))
  adjoint: str = checks.spec("recursive_checkpoint", checks.choice(*sorted(ADJOINTS)))

  def __post_init__(self):
    super().__post_init__()
    check_solver_options(self.solver, self.rtol, self.atol, self.num_steps, self.max_steps, self.adjoint)


def get_ode_sampler(sde: SDE, shape, options: ODEOptions | None = None, **overrides):
  """Samples by integrating the probability-flow ODE from a prior draw at T down to t_min (``ODEOptions``).

  dx/dt = f(x, t) - g(t)^2 score(x, t) / 2 (Song et al. 2021 eq. 13). An adaptive solver steps the
  whole batch jointly (one error norm over it), so a sample depends on its batch-mates through the
  step sizes; with ``num_steps`` (fixed equal steps) it does not. The solve is diffrax's own loop (its
  ``init/step`` protocol), not a ``steps.Stepper``.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  o = ODEOptions.build(options, **overrides)
  shape = common.check_shape(shape)
  t_min = common.check_t_min(sde, o.t_min)
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    x = steps.prior_draw(sde, shape, common.per_sample_keys(key, batch))
    rsde = sde.reverse(score_fn, probability_flow=True)
    x, nfe = solve(lambda t, y: rsde.sde(y, common.full_time(t, batch))[0], x, sde.t_end, t_min, solver=o.solver,
                   rtol=o.rtol, atol=o.atol, num_steps=o.num_steps, max_steps=o.max_steps, adjoint=o.adjoint)
    if o.denoise:
      x, nfe = common.tweedie_denoise(sde, score_fn, x, common.full_time(t_min, batch)), nfe + 1
    return x, nfe

  return sample_fn
