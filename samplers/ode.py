"""The probability-flow ODE (Song et al. 2021 eq. 13) solved on device by diffrax.

``solve`` is the one ODE path of the project: the ODE sampler and the likelihood both call it.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import SDE, ScoreFn

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


def check_solver_options(solver: str, rtol, atol, num_steps, max_steps) -> None:
  common.check_choice("solver", solver, SOLVERS)
  if num_steps is None:
    if solver not in ADAPTIVE:
      raise ValueError(f"solver {solver!r} has no error estimate: give num_steps, or pick one of {list(ADAPTIVE)}")
    common.check_positive("rtol", rtol)
    common.check_positive("atol", atol)
  else:
    common.check_steps("num_steps", num_steps)
  common.check_steps("max_steps", max_steps)


def solve(vector_field: Callable, y0, t0: float, t1: float, *, solver: str = "tsit5", rtol: float = 1e-5,
          atol: float = 1e-5, num_steps: int | None = None, max_steps: int = 4096):
  """Integrates dy/dt = vector_field(t, y) from t0 to t1 (either direction) with diffrax.

  Arguments:
    vector_field: ``(t scalar, y pytree) -> dy/dt`` like y.
    solver: a name in ``SOLVERS``.
    rtol, atol: tolerances of the PID step-size controller (adaptive when num_steps is None).
    num_steps: a fixed number of equal steps instead.
    max_steps: the most steps an adaptive solve may take (diffrax raises when it runs out).

  Returns:
    (y(t1), nfe): nfe is the number of vector-field evaluations performed, an int32 scalar.
  """
  cls, per_step, at_start = SOLVERS[solver]
  if num_steps is None:
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
  else:
    controller, dt0, max_steps = diffrax.ConstantStepSize(), (t1 - t0) / num_steps, num_steps
  sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, args: vector_field(t, y)), cls(), t0, t1, dt0, y0,
                            stepsize_controller=controller, max_steps=max_steps,
                            saveat=diffrax.SaveAt(t1=True))
  nfe = per_step * sol.stats["num_steps"] + at_start
  return jax.tree.map(lambda v: v[0], sol.ys), jnp.asarray(nfe, jnp.int32)


def get_ode_sampler(sde: SDE, shape, *, solver: str = "tsit5", rtol: float = 1e-5, atol: float = 1e-5,
                    num_steps: int | None = None, t_min: float = 1e-3, denoise: bool = True, max_steps: int = 4096):
  """Samples by integrating the probability-flow ODE from a prior draw at T down to t_min.

  dx/dt = f(x, t) - g(t)^2 score(x, t) / 2 (Song et al. 2021 eq. 13). An adaptive solver steps the
  whole batch jointly (one error norm over it), so a sample depends on its batch-mates through the
  step sizes; with ``num_steps`` (fixed equal steps) it does not. ``denoise`` adds Tweedie's step at
  t_min (1 NFE).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  shape = common.check_shape(shape)
  check_solver_options(solver, rtol, atol, num_steps, max_steps)
  t_min = common.check_t_min(sde, t_min)
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    x = sde.prior_std * common.per_sample_normal(common.per_sample_keys(key, batch), 0, shape)
    rsde = sde.reverse(score_fn, probability_flow=True)
    x, nfe = solve(lambda t, y: rsde.sde(y, common.full_time(t, batch))[0], x, sde.T, t_min, solver=solver,
                   rtol=rtol, atol=atol, num_steps=num_steps, max_steps=max_steps)
    if denoise:
      x, nfe = common.tweedie_denoise(sde, score_fn, x, common.full_time(t_min, batch)), nfe + 1
    return x, nfe

  return sample_fn
