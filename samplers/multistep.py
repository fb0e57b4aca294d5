"""Multistep exponential integrators with the data prediction: DPM-Solver++(1M/2M/3M) and UniPC.

Both work in x_hat = x/a against lambda = -log sigma (sigma = s/a), where the probability-flow ODE is
the same for VE, VP and sub-VP (Karras et al. 2022 eq. 4 / Lu et al. 2022b eq. 8 divided by a), with
the data prediction D(x_hat; sigma) of Tweedie's formula (``common.tweedie_denoise``). Over a grid
lambda_0 < ... < lambda_N every step k -> k+1 is a linear combination

    x_hat_{k+1} = e^{-h} x_hat_k + sum_j c_kj m_{k-j},   h = lambda_{k+1} - lambda_k,

of the last data predictions m (and, for UniPC's corrector, the new one), so a method is a table of
coefficients computed once from the grid (``dpm_solver_pp_tables``, ``unipc_tables``) and run by one
loop (``run_multistep``). The tables are jax functions of lambda, so a grid can be fitted by gradient
descent through the sampler (``samplers.fit_grid``).

Orders: step k uses order min(order, k + 1) (the warm-up: only k + 1 predictions exist), and with
``lower_order_final`` also min(., N - k), so the last steps drop to 2nd and 1st order (Lu et al. 2022b
sec. 3.4 and its code: it stabilises sampling below ~15 NFE; dpm-solver's and UniPC's
``lower_order_final``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samplers import common, schedules
from sde_lib import SDE, ScoreFn

MAX_ORDER = 3


def step_orders(n: int, order: int, lower_order_final: bool) -> list[int]:
  """The order of each of the n steps (warm-up from 1; lower orders at the end if asked)."""
  return [min(order, k + 1, n - k if lower_order_final else order) for k in range(n)]


def _unit(j: int):
  return jnp.zeros(MAX_ORDER + 1).at[j].set(1.0)


def dpm_solver_pp_tables(lams, orders):
  """DPM-Solver++ coefficients: (ratio [N], pred [N, 4]) over m_k, m_{k-1}, m_{k-2} (and unused m_new).

  1st order: x' = e^{-h} x - phi_1 m_0,  phi_1 = e^{-h} - 1          (Lu et al. 2022b eq. 9, DDIM)
  2M: + -phi_1/2 D1_0, D1_0 = (m_0 - m_1)/r_0, r_0 = h_{-1}/h         (ibid. Alg. 2)
  3M: + phi_2 D1 - 2 phi_3 D2, phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2, with
      D1 = D1_0 + r_0/(r_0+r_1) (D1_0 - D1_1) ~ h m',  D2 = (D1_0 - D1_1)/(r_0+r_1) ~ h^2 m''/2.
  The weights are those of the Taylor expansion of eq. 8's integral, int_0^h e^{tau-h} m(lambda+tau)
  dtau = -phi_1 m + h phi_2 m' - h^2 phi_3 m'' + O(h^4) (Lu et al. 2022a eq. 3.6 with data prediction),
  so a quadratic m(lambda) is integrated exactly (tested). dpm-solver's multistep 3rd-order update (and
  its copies in k-diffusion/diffusers) subtracts phi_3 D2, half the m'' term.
  """
  ratios, preds = [], []
  for k, p in enumerate(orders):
    h = lams[k + 1] - lams[k]
    phi1 = jnp.expm1(-h)
    c = -phi1 * _unit(0)
    if p >= 2:
      r0 = (lams[k] - lams[k - 1]) / h
      d10 = (_unit(0) - _unit(1)) / r0
      if p == 2:
        c = c - 0.5 * phi1 * d10
      else:
        r1 = (lams[k - 1] - lams[k - 2]) / h
        d11 = (_unit(1) - _unit(2)) / r1
        d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
        d2 = (d10 - d11) / (r0 + r1)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        c = c + phi2 * d1 - 2.0 * phi3 * d2
    ratios.append(jnp.exp(-h))
    preds.append(c)
  return jnp.stack(ratios), jnp.stack(preds)


def unipc_tables(lams, orders, variant: str = "bh2"):
  """UniPC coefficients (Zhao et al. 2023, Alg. 2/3 with the data prediction, B(h) = e^{-h} - 1 for
  "bh2", -h for "bh1"): (ratio [N], pred [N, 4], corr [N, 4]), column 3 of corr multiplying the new
  prediction m_new = D(x_pred) at lambda_{k+1}.

  With r_i = (lambda_{k-i} - lambda_k)/h, D_i = (m_i - m_0)/r_i (i < p) and r_p = 1, the order-p
  conditions sum_i a_i r_i^(q-1) = q! phi_{q+1}(h) h / B(h) (q = 1..p; ibid. Thm. 3.1, eq. 9 with
  phi_1 = (e^{-h} - 1)/(-h), phi_{q+1} = (phi_q - 1/q!)/(-h)) fix the corrector weights a (UniC);
  the predictor (UniP) solves the first p - 1 of them without r_p (a = 1/2 at p = 2; ibid. App. C).
      x_pred = e^{-h} x - phi_1 m_0 - B(h) sum_{i<p} a^P_i D_i
      x_corr = e^{-h} x - phi_1 m_0 - B(h) (sum_{i<p} a^C_i D_i + a^C_p (m_new - m_0))
  """
  ratios, preds, corrs = [], [], []
  for k, p in enumerate(orders):
    h = lams[k + 1] - lams[k]
    hh = -h
    phi1 = jnp.expm1(hh)
    b_h = phi1 if variant == "bh2" else hh
    rks = [(lams[k - i] - lams[k]) / h for i in range(1, p)] + [jnp.asarray(1.0)]
    diffs = [(_unit(i) - _unit(0)) / rks[i - 1] for i in range(1, p)] + [_unit(3) - _unit(0)]
    rks = jnp.stack(rks)
    rows, rhs = [], []
    h_phi, fact = phi1 / hh - 1.0, 1.0
    for q in range(1, p + 1):
      rows.append(rks ** (q - 1))
      rhs.append(h_phi * fact / b_h)
      fact *= q + 1
      h_phi = h_phi / hh - 1.0 / fact
    R, b = jnp.stack(rows), jnp.stack(rhs)
    base = -phi1 * _unit(0)
    if p == 1:
      pred = base
    else:
      rho_p = jnp.array([0.5]) if p == 2 else jnp.linalg.solve(R[:-1, :-1], b[:-1])
      pred = base - b_h * sum(rho_p[i] * diffs[i] for i in range(p - 1))
    rho_c = jnp.array([0.5]) if p == 1 else jnp.linalg.solve(R, b)
    corr = base - b_h * sum(rho_c[i] * diffs[i] for i in range(p))
    ratios.append(jnp.exp(-h))
    preds.append(pred)
    corrs.append(corr)
  return jnp.stack(ratios), jnp.stack(preds), jnp.stack(corrs)


def run_multistep(x_hat, denoise_k, ratios, preds, corrs=None, checkpoint: bool = False):
  """Runs the tables from x_hat at level 0 to level N: [B, ...] -> [B, ...]. NFE = N.

  ``denoise_k(x_hat, k)`` is the data prediction at level k (one score evaluation). The history
  (m_k, m_{k-1}, m_{k-2}) is carried; with ``corrs`` (UniPC) the new prediction at the predicted
  point corrects the step and is reused as the next step's m_k, so the corrector costs no NFE; the
  last step is predictor-only (its level's prediction would be the final denoising's). ``checkpoint``:
  rematerialise each step in the backward pass (``jax.checkpoint`` on the loop body).
  """
  n = ratios.shape[0]

  def combine(ratio, c, x, hist, new=None):
    out = ratio * x + sum(c[j] * hist[j] for j in range(MAX_ORDER))
    return out if new is None else out + c[MAX_ORDER] * new

  def body(k, carry):
    x, hist = carry
    x_pred = combine(ratios[k], preds[k], x, hist)
    m_new = denoise_k(x_pred, k + 1)
    x = x_pred if corrs is None else combine(ratios[k], corrs[k], x, hist, m_new)
    return x, jnp.stack([m_new, hist[0], hist[1]])

  hist = jnp.stack([denoise_k(x_hat, 0), jnp.zeros_like(x_hat), jnp.zeros_like(x_hat)])
  step = jax.checkpoint(body) if checkpoint else body                          # remat: memory for compute
  x_hat, hist = jax.lax.fori_loop(0, n - 1, step, (x_hat, hist))
  return combine(ratios[n - 1], preds[n - 1], x_hat, hist)


def scaled_denoiser_on_levels(sde: SDE, score_fn: ScoreFn, times, batch: int):
  """``D(x_hat, k)``: Tweedie's E[x_0 | x = a_k x_hat] at the level's time t_k (one NFE)."""
  a = sde.marginal_coefs(times)[0]

  def denoise_k(x_hat, k):
    t = common.full_time(times[k], batch)
    return common.tweedie_denoise(sde, score_fn, a[k] * x_hat, t)

  return denoise_k


def _builder(name: str, tables_fn):
  """A sampler builder over ``tables_fn(lams, orders)`` with the shared options and NFE budget."""

  def get_sampler(sde: SDE, shape, *, num_steps: int = 20, nfe: int | None = None, order: int = 2,
                  lower_order_final: bool = True, grid: str = "edm", rho: float = 7.0, t_min: float = 1e-3,
                  sigma_floor: float = 0.01, denoise: bool = True, checkpoint: bool = False):
    shape = common.check_shape(shape)
    if order not in range(1, MAX_ORDER + 1) or isinstance(order, bool):
      raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    t_min = common.check_t_min(sde, t_min)
    schedules.check_grid(grid)
    common.check_positive("rho", rho)
    common.check_positive("sigma_floor", sigma_floor)
    n = schedules.steps_for_budget(nfe, denoise) if nfe is not None else common.check_steps("num_steps", num_steps)
    batch = shape[0]
    sigmas = schedules.sigma_grid(sde, n, grid, t_min=t_min, sigma_floor=sigma_floor, rho=rho)
    lams = -jnp.log(jnp.asarray(sigmas, jnp.float32))
    tables = tables_fn(lams, step_orders(n, order, lower_order_final))

    def sample_fn(key: jax.Array, score_fn: ScoreFn):
      times = schedules.times_of(sde, sigmas)
      a = sde.marginal_coefs(times)[0]
      denoise_k = scaled_denoiser_on_levels(sde, score_fn, times, batch)
      x_hat = sde.prior_std * common.per_sample_normal(common.per_sample_keys(key, batch), 0, shape) / a[0]
      x_hat = run_multistep(x_hat, denoise_k, *tables, checkpoint=checkpoint)
      if denoise:
        return denoise_k(x_hat, n), jnp.asarray(n + 1, jnp.int32)
      return a[n] * x_hat, jnp.asarray(n, jnp.int32)

    return sample_fn

  get_sampler.__name__ = f"get_{name}_sampler"
  return get_sampler


_dpm = _builder("dpm_solver_pp", dpm_solver_pp_tables)
_unipc = _builder("unipc", lambda lams, orders: unipc_tables(lams, orders, "bh2"))


def get_dpm_solver_pp_sampler(sde: SDE, shape, *, num_steps: int = 20, nfe: int | None = None, order: int = 2,
                              lower_order_final: bool = True, grid: str = "edm", rho: float = 7.0,
                              t_min: float = 1e-3, sigma_floor: float = 0.01, denoise: bool = True,
                              checkpoint: bool = False):
  """DPM-Solver++(1M/2M/3M), the multistep data-prediction solver (Lu et al. 2022b, Alg. 2; 3M as in its code).

  Arguments:
    num_steps: solver steps N over the grid from sigma(T) to sigma_lo = max(sigma_floor, sigma(t_min)).
    nfe: the exact budget of score evaluations, final denoising included; overrides num_steps with
      N = nfe - denoise. None: use num_steps.
    order: 1, 2 (2M, default) or 3 (3M).
    lower_order_final: drop to lower orders on the last steps (see the module docstring).
    grid: "edm" (rho-grid, as k-diffusion's "DPM++ 2M Karras"), "logsnr" (uniform lambda) or
      "fitted:<name>" (``samplers.schedules``).
    denoise: return Tweedie's D at sigma_lo (+1 NFE), else a(t_lo) x_hat.
    checkpoint: rematerialise each step in the backward pass (``jax.checkpoint`` on the loop body; as
      ``get_pc_sampler``).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)`` with nfe = N + denoise.
  """
  return _dpm(sde, shape, num_steps=num_steps, nfe=nfe, order=order, lower_order_final=lower_order_final, grid=grid,
              rho=rho, t_min=t_min, sigma_floor=sigma_floor, denoise=denoise, checkpoint=checkpoint)


def get_unipc_sampler(sde: SDE, shape, *, num_steps: int = 20, nfe: int | None = None, order: int = 3,
                      lower_order_final: bool = True, grid: str = "logsnr", rho: float = 7.0, t_min: float = 1e-3,
                      sigma_floor: float = 0.01, denoise: bool = True, checkpoint: bool = False):
  """UniPC-bh2 with the data prediction (Zhao et al. 2023, Alg. 3): UniP-p predictor, UniC corrector
  of order p + 1 reusing the next step's model evaluation (no extra NFE; none after the last step).

  Arguments as ``get_dpm_solver_pp_sampler``; order = p in {1, 2, 3} (default 3, the UniPC paper's
  choice for unconditional sampling). Returns ``sample_fn(key, score_fn) -> (x, nfe)``, nfe = N + denoise.
  """
  return _unipc(sde, shape, num_steps=num_steps, nfe=nfe, order=order, lower_order_final=lower_order_final,
                grid=grid, rho=rho, t_min=t_min, sigma_floor=sigma_floor, denoise=denoise, checkpoint=checkpoint)

