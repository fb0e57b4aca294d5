"""Fitting a noise-level grid to the data through the score function, and saving it.

In the spirit of "Align Your Steps" (Sabour et al. 2024), which moves the levels of a few-step grid to
minimise an upper bound on the KL divergence between discretised and exact dynamics, we move the
levels to minimise the discretisation error of the sampler itself on the probability-flow ODE:

    L(lambda) = E_{x_T ~ prior} log(1 + || Phi_lambda(x_T) - Phi_ref(x_T) ||^2 / (delta^2 tr Cov[Phi_ref]))

(``OBJECTIVE``), where Phi_lambda is the fast solver on the grid lambda (DPM-Solver++ or UniPC, ``samplers.multistep``)
and Phi_ref the same solver on a fine uniform-lambda grid (``ref_steps`` steps, its error far
below the fitted one), both ending in the final denoising, from the same prior draws. The interior
levels are lambda_k = lambda_0 + (lambda_N - lambda_0) cumsum(softmax(theta))_k (monotone, ends
fixed); the robust (Cauchy) loss keeps the few draws that land in another mode than the reference
(near a decision boundary the flow is chaotic, their error is a mode separation) from outweighing the
discretisation error of all the others, which is what widens modes. theta starts at the uniform-lambda grid and is fitted by Adam through the solver's coefficient
tables. It needs only a ``score_fn`` (the oracle's exact score here, a trained model in practice).
Fit once per SDE and data set; evaluate on other draws than those fitted on.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplers import common, multistep, schedules
from sde_lib import SDE, ScoreFn

OBJECTIVE = "mean log(1 + |x - x_ref|^2 / (delta^2 tr Cov[x_ref])) over prior draws, x_ref from a 500-step logsnr solve"
TABLES = {"dpm_solver_pp": multistep.dpm_solver_pp_tables,
          "unipc": lambda lams, orders: multistep.unipc_tables(lams, orders, "bh2")}


def _solve(sde, score_fn, x_T, sigmas, method, order):
  """The fast solver from prior draws x_T [B, ...] over ``sigmas`` (jax array [N+1]), denoised: [B, ...]."""
  n = sigmas.shape[0] - 1
  times = sde.t_from_sigma(sigmas).at[0].set(sde.T)
  lams = -jnp.log(sigmas)
  below = multistep.DPM_SOLVER_PP_FINAL_BELOW if method == "dpm_solver_pp" else None   # as the sampler lowers
  tables = TABLES[method](lams, multistep.step_orders(n, order, True, below))
  denoise_k = multistep.scaled_denoiser_on_levels(sde, score_fn, times, x_T.shape[0])
  x_hat = x_T / sde.marginal_coefs(times[0])[0]
  return denoise_k(multistep.run_multistep(x_hat, denoise_k, *tables), n)


def fit_grid(key: jax.Array, sde: SDE, score_fn: ScoreFn, shape, steps: int, *, method: str = "unipc",
             order: int = 3, t_min: float = 1e-3, sigma_floor: float = 0.01, ref_steps: int = 500,
             iters: int = 300, lr: float = 0.05, delta: float = 0.1) -> tuple[np.ndarray, dict]:
  """Fits an N = ``steps`` grid for ``method`` (nfe = steps + 1 with the final denoising).

  Arguments:
    key: prior draws (one fixed batch).  shape: [B, ...] of the batch fitted on.
  Returns:
    sigmas: [steps + 1] float64, decreasing from sigma(T) to sigma_lo.
    info: {"loss_logsnr", "loss_edm", "loss_fitted"}: the objective on the fitting batch.
  """
  common.check_choice("method", method, TABLES)
  hi, lo = schedules.sigma_ends(sde, t_min, sigma_floor)
  x_T = sde.prior_std * jax.random.normal(key, tuple(shape))
  ref = _solve(sde, score_fn, x_T, jnp.asarray(schedules.sigma_grid(sde, ref_steps, "logsnr", t_min=t_min,
                                                                    sigma_floor=sigma_floor), jnp.float32),
               method, order)
  scale = float(jnp.sum(jnp.var(ref.reshape(ref.shape[0], -1), 0)))

  def sigmas_of(theta):
    u = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jax.nn.softmax(theta))])
    return jnp.exp(math.log(hi) + u * (math.log(lo) - math.log(hi)))

  def loss(theta=None, sigmas=None):
    sigmas = sigmas_of(theta) if sigmas is None else sigmas
    err = jnp.sum(jnp.square(_solve(sde, score_fn, x_T, sigmas, method, order) - ref).reshape(x_T.shape[0], -1), 1)
    return jnp.mean(jnp.log1p(err / (delta**2 * scale)))

  theta = jnp.zeros(steps)
  opt = optax.adam(lr)
  state = opt.init(theta)

  @jax.jit
  def update(theta, state):
    value, grad = jax.value_and_grad(loss)(theta)
    upd, state = opt.update(grad, state)
    return optax.apply_updates(theta, upd), state, value

  best = (float(loss(theta)), theta)
  for _ in range(iters):
    theta, state, value = update(theta, state)
    if float(value) < best[0]:
      best = (float(value), theta)
  theta = best[1]
  fitted = np.asarray(sigmas_of(theta), np.float64)
  fitted[0], fitted[-1] = hi, lo
  info = {"loss_logsnr": float(loss(jnp.zeros(steps))),
          "loss_edm": float(loss(sigmas=jnp.asarray(schedules.edm_sigmas(hi, lo, steps, 7.0), jnp.float32))),
          "loss_fitted": float(loss(theta))}
  return fitted, info


def save_grid(path: str, grids: dict[int, np.ndarray], **metadata) -> None:
  """Writes ``{"grids": {"<steps>": [sigma...]}, **metadata}`` as JSON (``schedules.load_fitted`` reads it)."""
  record = dict(metadata, grids={str(k): [float(s) for s in v] for k, v in sorted(grids.items())})
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
