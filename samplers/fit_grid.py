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
Fit once per SDE and data set; evaluate on other draws than those fitted on. The stored grids
(``samplers/grids``) were fitted this way on the mixture the fast-sampler benchmark evaluates. On a held-out
family of mixtures (``benchmarks/results/grid_transfer.md``) they are worse than the log-SNR grid at 10 NFE
(median spread error 0.38 against 0.12-0.21) and better at 20 NFE (0.02-0.03 against 0.05-0.07): a grid
fitted on one mixture is not a grid for another.

``fit_grid_from_model`` is the version for a user's own model: it fits a grid for any fast method (EDM
Heun included) from the model's score and samples of its training data, with the error measured relative
to the local spread of the data; ``denoiser_solve`` is the differentiable sampler it fits through, in
x_hat = x/a against sigma, where one compiled fit serves every SDE. Save with ``save_grid`` and sample with
``grid="fitted:<path.json>"``.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplers import common, heun, multistep, schedules
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


# ------------------------------------------------------------------ fitting from the model and the training data
# Everything below works in x_hat = x/a against sigma (module docstring of ``samplers.schedules``): a solve needs
# only the denoiser D(x_hat; sigma), so one compiled fit serves every SDE and every model of the same shape when
# D is passed as a pytree (``jax.tree_util.Partial``) rather than closed over.
FIT_METHODS = ("edm_heun", "dpm_solver_pp", "unipc")
MODEL_OBJECTIVE = ("mean over prior draws of log(1 + |x - x_ref|^2 / (delta^2 D v(x_ref))); v: local data variance "
                   "(mean squared distance from x_ref to its k nearest training samples / 2D); x_ref: a 500-step "
                   "log-SNR DPM-Solver++(2M) solve of the same draws; delta by default the median relative error "
                   "of the log-SNR grid")
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]      # D(x_hat [B, ...], sigma scalar) -> [B, ...]


def grid_levels(method: str, nfe: int) -> int:
  """Intervals n of the grid a fast method spends an exact budget ``nfe`` on (final denoising included; n + 1
  levels). Multistep: n = nfe - 1 steps; EDM Heun: H Heun and E in {0, 1} Euler steps, n = H + E."""
  common.check_choice("method", method, FIT_METHODS)
  if method == "edm_heun":
    return sum(heun.heun_budget(nfe, True))
  return schedules.steps_for_budget(nfe, True)


def _heun(denoise: Denoiser, x_hat, sigmas, euler_first: bool):
  """EDM's deterministic Heun sampler (Karras et al. 2022 Alg. 1: ``samplers.heun``'s steps with s_churn = 0):
  one Euler step first if ``euler_first``, Heun steps, the final denoising. The levels are traced (the fit
  differentiates through them), which the stepper's static levels are not; the steps are the stepper's own."""
  m = sigmas.shape[0] - 1
  if euler_first:                                                        # Alg. 1 l. 4-5 alone
    x_hat = heun.euler_step(denoise, x_hat, sigmas[0], sigmas[1])[1]
  for k in range(int(euler_first), m):
    d, x_next, _ = heun.euler_step(denoise, x_hat, sigmas[k], sigmas[k + 1])
    x_hat = heun.heun_correction(denoise, x_hat, sigmas[k], sigmas[k + 1], d, x_next)[0]
  return denoise(x_hat, sigmas[m])                                       # Euler to sigma = 0 lands on D


def denoiser_solve(denoise: Denoiser, x_hat, sigmas, method: str, nfe: int, order: int = 2):
  """The fast sampler ``method`` at exactly ``nfe`` evaluations (final denoising included) from x_hat(T) =
  x_T / a(T) [B, ...] over ``sigmas`` ([grid_levels + 1], decreasing), with the denoiser D: [B, ...].
  Differentiable in ``sigmas``. DPM-Solver++ and UniPC-bh2 with their samplers' lower_order_final rules."""
  sigmas = jnp.asarray(sigmas, jnp.float32)
  n = grid_levels(method, nfe)
  if sigmas.shape != (n + 1,):
    raise ValueError(f"sigmas must have {n + 1} levels for {method} at nfe={nfe}, got shape {sigmas.shape}")
  if method == "edm_heun":
    return _heun(denoise, x_hat, sigmas, bool(heun.heun_budget(nfe, True)[1]))
  below = multistep.DPM_SOLVER_PP_FINAL_BELOW if method == "dpm_solver_pp" else None
  tables = TABLES[method](-jnp.log(sigmas), multistep.step_orders(n, order, True, below))
  return denoise(multistep.run_multistep(x_hat, lambda x, k: denoise(x, sigmas[k]), *tables), sigmas[n])


def model_denoiser(sde: SDE, score_fn: ScoreFn, batch: int) -> Denoiser:
  """D(x_hat; sigma) of a score model (``common.scaled_denoiser``, Tweedie's formula) as a pytree."""
  return jax.tree_util.Partial(common.scaled_denoiser(sde, score_fn, batch))


def prior_hat(sde: SDE, key: jax.Array, shape) -> jax.Array:
  """Prior draws in x_hat: x_T / a(T) with x_T ~ ``sde.prior_sampling``: [shape]."""
  return sde.prior_sampling(key, tuple(shape)) / sde.marginal_coefs(jnp.asarray(sde.T))[0]


def solve_on_grid(sde: SDE, score_fn: ScoreFn, x_T, sigmas, method: str, nfe: int, order: int = 2):
  """``denoiser_solve`` from prior draws x_T [B, ...] with the model's denoiser: the sample [B, ...] the sampler
  ``method`` (nfe=``nfe``, grid = ``sigmas``) gives from x_T, up to float rounding."""
  x_T = jnp.asarray(x_T)
  x_hat = x_T / sde.marginal_coefs(jnp.asarray(sde.T))[0]
  return denoiser_solve(model_denoiser(sde, score_fn, x_T.shape[0]), x_hat, sigmas, method, nfe, order)


_REF_TABLES: dict = {}


@jax.jit
def _run_reference(denoise, x_hat, sigmas, ratios, preds):
  x_hat = multistep.run_multistep(x_hat, lambda x, k: denoise(x, sigmas[k]), ratios, preds)
  return denoise(x_hat, sigmas[-1])


def reference_solve(denoise: Denoiser, x_hat, sigma_hi: float, sigma_lo: float, ref_steps: int = 500):
  """A converged solve from x_hat(T) [B, ...]: DPM-Solver++(2M) on ``ref_steps`` log-SNR steps from sigma_hi
  to sigma_lo and the final denoising, as the fast-sampler benchmarks' reference: [B, ...]. Its coefficient
  tables are computed once per range (eagerly: tracing 500 steps is slower) and passed as arguments."""
  sigmas = np.exp(np.linspace(math.log(sigma_hi), math.log(sigma_lo), ref_steps + 1))
  cache_key = (float(sigma_hi), float(sigma_lo), ref_steps)
  if cache_key not in _REF_TABLES:
    lams = -jnp.log(jnp.asarray(sigmas, jnp.float32))
    _REF_TABLES[cache_key] = multistep.dpm_solver_pp_tables(
        lams, multistep.step_orders(ref_steps, 2, True, multistep.DPM_SOLVER_PP_FINAL_BELOW))
  return _run_reference(denoise, jnp.asarray(x_hat), jnp.asarray(sigmas, jnp.float32), *_REF_TABLES[cache_key])


def local_variance(points, data, k: int):
  """Per-coordinate local variance of the data around each point: the mean over its k nearest data samples
  (Euclidean) of |point - x_j|^2 / (2 D): [B]. points [B, ...], data [n, ...]. (Two independent draws of
  N(m, v I) have E|a - b|^2 = 2 D v; nearest neighbours are closer, by a factor that depends on D, k and the
  mode's share of the n samples, not on v.)"""
  p = points.reshape(points.shape[0], -1)
  x = data.reshape(data.shape[0], -1)
  d2 = jnp.sum(p * p, 1)[:, None] - 2 * p @ x.T + jnp.sum(x * x, 1)[None]
  nearest = -jax.lax.top_k(-d2, k)[0]
  return jnp.maximum(jnp.mean(nearest, 1), 1e-12) / (2 * p.shape[1])


def _theta_of(sigmas, hi, lo):
  """The softmax logits of the grid parameterisation (``_sigmas_of``) that give the decreasing ``sigmas``."""
  u = (np.log(np.asarray(sigmas, np.float64)) - math.log(hi)) / (math.log(lo) - math.log(hi))
  return jnp.asarray(np.log(np.maximum(np.diff(u), 1e-12)), jnp.float32)


def _sigmas_of(theta, log_hi, log_lo):
  u = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jax.nn.softmax(theta))])    # monotone, ends fixed
  return jnp.exp(log_hi + u * (log_lo - log_hi))


def _sq_error(theta, denoise, x_hat, ref, log_hi, log_lo, method, nfe, order):
  x = denoiser_solve(denoise, x_hat, _sigmas_of(theta, log_hi, log_lo), method, nfe, order)
  return jnp.sum(jnp.square(x - ref).reshape(x.shape[0], -1), 1)


def _fit_loss(theta, denoise, x_hat, ref, weight, log_hi, log_lo, method, nfe, order):
  return jnp.mean(jnp.log1p(_sq_error(theta, denoise, x_hat, ref, log_hi, log_lo, method, nfe, order) * weight))


_fit_value_and_grad = jax.jit(jax.value_and_grad(_fit_loss), static_argnames=("method", "nfe", "order"))
_fit_sq_error = jax.jit(_sq_error, static_argnames=("method", "nfe", "order"))


def fit_grid_from_denoiser(key: jax.Array, denoise: Denoiser, data, nfe: int, sigma_hi: float, sigma_lo: float,
                           prior_std_hat: float, *, method: str = "unipc", order: int = 2, batch: int = 512,
                           ref_steps: int = 500, iters: int = 150, lr: float = 0.05, delta: float | None = None,
                           delta_quantile: float = 0.5, neighbours: int = 10) -> tuple[np.ndarray, dict]:
  """``fit_grid_from_model`` on a denoiser D(x_hat; sigma) (a pytree, e.g. ``model_denoiser``), the range
  [sigma_lo, sigma_hi] and the prior std of x_hat(T) (prior_std / a(T)). Fits with the same D, shapes and
  settings share one compilation."""
  n = grid_levels(method, nfe)
  data = jnp.asarray(data, jnp.float32)
  if data.ndim < 2 or data.shape[0] <= neighbours:
    raise ValueError(f"data must be [n, ...] training samples with n > neighbours={neighbours}, got shape {data.shape}")
  hi, lo = float(sigma_hi), float(sigma_lo)
  x_hat = prior_std_hat * jax.random.normal(key, (batch,) + tuple(data.shape[1:]))
  ref = reference_solve(denoise, x_hat, hi, lo, ref_steps)
  relative = 1.0 / (ref[0].size * local_variance(ref, data, neighbours))   # |error|^2 -> (error / local std)^2
  static = dict(method=method, nfe=nfe, order=order)
  ends = (jnp.float32(math.log(hi)), jnp.float32(math.log(lo)))
  i = np.arange(n + 1) / n
  starts = {"logsnr": np.exp(math.log(hi) + i * (math.log(lo) - math.log(hi))),
            "edm": schedules.edm_sigmas(hi, lo, n, 7.0)}
  if delta is None:   # the Cauchy scale at a quantile of the log-SNR grid's relative errors: a scale-free objective
    delta = float(jnp.sqrt(jnp.quantile(relative * _fit_sq_error(_theta_of(starts["logsnr"], hi, lo), denoise, x_hat,
                                                                    ref, *ends, **static), delta_quantile)))
  args = (denoise, x_hat, ref, relative / delta**2) + ends
  losses = {g: float(_fit_value_and_grad(_theta_of(s, hi, lo), *args, **static)[0]) for g, s in starts.items()}
  init = min(losses, key=losses.get)                                     # start from the better shipped grid
  theta = _theta_of(starts[init], hi, lo)
  opt = optax.adam(lr)
  state = opt.init(theta)
  best = (losses[init], theta)
  for _ in range(iters):
    value, grad = _fit_value_and_grad(theta, *args, **static)
    if float(value) < best[0]:
      best = (float(value), theta)
    upd, state = opt.update(grad, state)
    theta = optax.apply_updates(theta, upd)
  fitted = np.asarray(_sigmas_of(best[1], math.log(hi), math.log(lo)), np.float64)
  fitted[0], fitted[-1] = hi, lo
  info = {"loss_logsnr": losses["logsnr"], "loss_edm": losses["edm"], "init": init, "loss_fitted": best[0],
          "objective": MODEL_OBJECTIVE, "method": method, "order": order, "nfe": nfe, "batch": batch,
          "iters": iters, "lr": lr, "delta": delta, "neighbours": neighbours, "ref_steps": ref_steps}
  return fitted, info


def fit_grid_from_model(key: jax.Array, sde: SDE, score_fn: ScoreFn, data, nfe: int, *, method: str = "unipc",
                        order: int = 2, t_min: float = 1e-3, sigma_floor: float = 0.01, **options
                        ) -> tuple[np.ndarray, dict]:
  """Fits the noise levels of ``method`` at exactly ``nfe`` evaluations from the model and its training data.

  AYS-style (Sabour et al. 2024 fit a schedule per model, data set and solver by minimising a bound on the
  discretisation error estimated with the model itself), but what is minimised here is the solver's own
  end-point error on the probability-flow ODE relative to the local spread of the training data
  (``MODEL_OBJECTIVE``):

      L(grid) = mean_b log(1 + |Phi_grid(x_T,b) - Phi_ref(x_T,b)|^2 / (delta^2 D v_b))

  Phi_grid: the sampler on the grid (``denoiser_solve``); Phi_ref: a ``ref_steps``-step log-SNR
  DPM-Solver++(2M) solve of the same ``batch`` prior draws; v_b: ``local_variance`` of ``data`` around
  Phi_ref(x_T,b) (``neighbours`` neighbours), so every mode's spread counts whatever its width (``fit_grid``'s
  global scale lets wide modes dominate). An error of delta local data stds costs log 2: errors well below it
  count quadratically, far above it logarithmically, which keeps draws that end in another mode than the
  reference from dominating. delta None (default): the ``delta_quantile`` (0.5) quantile of the log-SNR
  grid's relative errors on the fitting batch (the nearest-neighbour variance is biased low by a factor that
  depends on D and the sample size, so a fixed delta would mean different things in different dimensions).
  The grid is log sigma = cumulated softmax(theta) between fixed ends, started from the better of the
  log-SNR and EDM rho = 7 grids, moved by ``iters`` Adam steps (rate ``lr``); the best grid seen is returned.
  It sees only ``score_fn`` and ``data``; deterministic given ``key``. Save it with ``save_grid`` and sample
  with ``grid="fitted:<path.json>"``.

  Arguments:
    key: the prior draws fitted on.  score_fn: the model's score.  data: training samples [n, ...], n > neighbours.
    nfe: the exact budget (final denoising included).  method: "edm_heun", "dpm_solver_pp" or "unipc" (order
    ``order``).  t_min, sigma_floor: the samplers' (the grid spans sigma(T) to max(sigma_floor, sigma(t_min))).
    options: batch (512), ref_steps (500), iters (150), lr (0.05), delta (None: automatic), delta_quantile
    (0.5), neighbours (10).
  Returns:
    sigmas: [grid_levels(method, nfe) + 1] float64, decreasing.  info: the objective on the fitting batch for
    the log-SNR, EDM and fitted grids, the start, and the settings.
  Raises:
    ValueError: an unknown method, a budget too small, data with too few rows.
  """
  hi, lo = schedules.sigma_ends(sde, t_min, sigma_floor)
  prior_std_hat = float(sde.prior_std / sde.marginal_coefs(jnp.asarray(sde.T))[0])
  batch = options.get("batch", 512)
  sigmas, info = fit_grid_from_denoiser(key, model_denoiser(sde, score_fn, batch), data, nfe, hi, lo, prior_std_hat,
                                        method=method, order=order, **options)
  return sigmas, dict(info, t_min=t_min, sigma_floor=sigma_floor)
