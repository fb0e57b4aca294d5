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
``lower_order_final`` also min(., N - k), so the last steps drop to 2nd and 1st order, as each reference
code applies it: DPM-Solver++ only when N < 10 (LuChengTHU/dpm-solver, ``DPM_Solver.sample``, method
"multistep": "We only use lower order for steps < 10"; its docstring says < 15, and diffusers' scheduler
uses < 15), UniPC at every N (wl-zhao/UniPC, ``UniPC.sample``). It stabilises sampling at few steps
(Lu et al. 2022b sec. 3.4).

Thresholding (``thresholding`` = "static" | "dynamic"): the data prediction m = D(x_hat; sigma) is clipped to
the data range, or dynamically thresholded (Saharia et al. 2022 sec. 2.3), where it is formed
(``common.tweedie_denoise``), as DPM-Solver++'s ``correcting_x0_fn`` does (Lu et al. 2022b sec. 5).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samplers import common, schedules, steps
from sde_lib import SDE, ScoreFn, checks

MAX_ORDER = 3
# lower_order_final acts only below this many steps: DPM-Solver++'s reference (``DPM_Solver.sample``, "steps <
# 10"); UniPC's reference lowers at every step count (None).
DPM_SOLVER_PP_FINAL_BELOW = 10
UNIPC_VARIANTS = ("bh1", "bh2")


def step_orders(n: int, order: int, lower_order_final: bool, below: int | None = None) -> list[int]:
  """The order of each of the n steps: warm-up from 1; with ``lower_order_final`` and n < ``below`` (None: any
  n) min(order, n - k) on the last steps (module docstring)."""
  lower = lower_order_final and (below is None or n < below)
  return [min(order, k + 1, n - k if lower else order) for k in range(n)]


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
  common.check_choice("variant", variant, UNIPC_VARIANTS)
  ratios, preds, corrs = [], [], []
  for k, p in enumerate(orders):
    h = lams[k + 1] - lams[k]
    hh = -h
    phi1 = jnp.expm1(hh)
    b_h = phi1 if variant == "bh2" else hh           # B(h): bh2 e^{-h} - 1, bh1 -h (ibid. sec. 3.3; UniPC's code)
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


def _combine(ratio, c, x, hist, new=None):
  """ratio x + sum_j c_j m_{k-j} (+ c_3 m_new): one row of a table."""
  out = ratio * x + sum(c[j] * hist[j] for j in range(MAX_ORDER))
  return out if new is None else out + c[MAX_ORDER] * new


def run_multistep(x_hat, denoise_k, ratios, preds, corrs=None, checkpoint: bool = False):
  """Runs the tables from x_hat at level 0 to level N: [B, ...] -> [B, ...]. NFE = N.

  ``denoise_k(x_hat, k)`` is the data prediction at level k (one score evaluation). The history
  (m_k, m_{k-1}, m_{k-2}) is carried; with ``corrs`` (UniPC) the new prediction at the predicted
  point corrects the step and is reused as the next step's m_k, so the corrector costs no NFE; the
  last step is predictor-only (its level's prediction would be the final denoising's). ``checkpoint``:
  rematerialise each step in the backward pass (``jax.checkpoint`` on the loop body).
  """
  n = ratios.shape[0]

  combine = _combine

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


def scaled_denoiser_on_levels(sde: SDE, score_fn: ScoreFn, times, batch: int, threshold=None):
  """``D(x_hat, k)``: Tweedie's E[x_0 | x = a_k x_hat] at the level's time t_k (one NFE), corrected by
  ``threshold`` (``common.thresholder``) when given."""
  a = sde.marginal_coefs(times)[0]

  def denoise_k(x_hat, k):
    t = common.full_time(times[k], batch)
    return common.tweedie_denoise(sde, score_fn, a[k] * x_hat, t, threshold)

  return denoise_k


@dataclasses.dataclass(frozen=True)
class MultistepOptions(checks.Options):
  """Options of the multistep solvers, with their defaults (DPM-Solver++'s; ``UniPCOptions`` differs in grid).

  num_steps: solver steps N over the grid from sigma(T) to sigma_lo = max(sigma_floor, sigma(t_min)).
  nfe: the exact budget of score evaluations, final denoising included; overrides num_steps with
  N = nfe - denoise. None: use num_steps. order: 1, 2 or 3 (DPM-Solver++: 2M / 3M; UniPC: UniP's order p,
  UniC corrects to p + 1). lower_order_final: drop to lower orders on the last steps (DPM-Solver++ only
  when N < 10, UniPC always: see the module docstring). grid: "edm" (rho-grid, as k-diffusion's "DPM++ 2M
  Karras"), "logsnr" (uniform lambda) or "fitted:<name>" (``samplers.schedules``). denoise: return
  Tweedie's D at sigma_lo (+1 NFE), else a(t_lo) x_hat. checkpoint: rematerialise each step in the
  backward pass. thresholding: "none", "static" (clip the data prediction to [data_min, data_max]) or
  "dynamic" (Saharia et al. 2022's, quantile ``threshold_percentile`` of |x0| per sample;
  ``common.dynamic_threshold``). data_min, data_max: the data range (image configs: [-1, 1] if
  data.centered else [0, 1]).
  """

  num_steps: int = checks.spec(20, checks.integer(1))
  nfe: int | None = checks.spec(None, checks.optional(checks.integer(1)))
  order: int = checks.spec(2, checks.integer(1, MAX_ORDER))
  lower_order_final: bool = checks.spec(True, checks.boolean)
  grid: str = checks.spec("edm", schedules.GRID)
  rho: float = checks.spec(7.0, common.POSITIVE_FLOAT)
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  sigma_floor: float = checks.spec(0.01, common.POSITIVE_FLOAT)
  denoise: bool = checks.spec(True, checks.boolean)
  checkpoint: bool = checks.spec(False, checks.boolean)
  thresholding: str = checks.spec("none", common.THRESHOLDING)
  data_min: float = checks.spec(-1.0, common.DATA_BOUND)
  data_max: float = checks.spec(1.0, common.DATA_BOUND)
  threshold_percentile: float = checks.spec(0.995, common.PERCENTILE)

  def __post_init__(self):
    super().__post_init__()
    common.check_data_range(self)


@dataclasses.dataclass(frozen=True)
class DPMSolverPPOptions(MultistepOptions):
  """Options of ``get_dpm_solver_pp_sampler`` (``MultistepOptions``)."""


@dataclasses.dataclass(frozen=True)
class UniPCOptions(MultistepOptions):
  """Options of ``get_unipc_sampler`` (``MultistepOptions``; its grid defaults to "logsnr"). variant: B(h) of
  the UniPC updates, "bh2" (e^{-h} - 1) or "bh1" (-h) (Zhao et al. 2023 sec. 3.3, ``unipc_tables``)."""

  grid: str = checks.spec("logsnr", schedules.GRID)
  variant: str = checks.spec("bh2", checks.choice(*UNIPC_VARIANTS))


class MultistepStepper:
  """A multistep table (``tables_fn(lams, orders)``) run as steps (``steps.Stepper``) in x_hat.

  The state is (x_hat, history of the last three data predictions); the loop runs steps 0 .. N-2, each
  evaluating the prediction at its new level (UniPC's corrector reuses it), and ``finish`` takes the last,
  predictor-only step (its level's prediction would be the final denoising's) and the final denoising.
  """

  def __init__(self, sde: SDE, shape, options: MultistepOptions, tables_fn, final_below: int | None = None):
    self.sde, self.shape, self.options = sde, common.check_shape(shape), options
    o = options
    t_min = common.check_t_min(sde, o.t_min)
    self.n = schedules.steps_for_budget(o.nfe, o.denoise) if o.nfe is not None else o.num_steps
    self.sigmas = schedules.sigma_grid(sde, self.n, o.grid, t_min=t_min, sigma_floor=o.sigma_floor, rho=o.rho)
    lams = -jnp.log(jnp.asarray(self.sigmas, jnp.float32))
    self.tables = tables_fn(lams, step_orders(self.n, o.order, o.lower_order_final, final_below))
    self.threshold = common.thresholder(o)
    self.start, self.stop, self.checkpoint = 0, self.n - 1, o.checkpoint
    self.step_nfe = 1
    self.nfe = self.n + int(o.denoise)

  def times(self):
    return schedules.times_of(self.sde, self.sigmas)

  def _denoiser(self, score_fn):
    return scaled_denoiser_on_levels(self.sde, score_fn, self.times(), self.shape[0], self.threshold)

  def init(self, score_fn, x, keys):
    x_hat = x / self.sde.marginal_coefs(self.times())[0][0]
    return x_hat, jnp.stack([self._denoiser(score_fn)(x_hat, 0), jnp.zeros_like(x_hat), jnp.zeros_like(x_hat)])

  def step(self, score_fn, k, state, keys):
    ratios, preds, *corrs = self.tables
    x, hist = state
    x_pred = _combine(ratios[k], preds[k], x, hist)
    m_new = self._denoiser(score_fn)(x_pred, k + 1)
    x = x_pred if not corrs else _combine(ratios[k], corrs[0][k], x, hist, m_new)
    return x, jnp.stack([m_new, hist[0], hist[1]])

  def _a(self, k):
    return self.sde.marginal_coefs(self.times())[0][k]

  def x_of(self, state, k):
    return self._a(k) * state[0]

  def with_x(self, state, k, x):
    return x / self._a(k), state[1]

  def denoised_of(self, state):
    return state[1][0]

  def finish(self, score_fn, state, keys):
    ratios, preds = self.tables[:2]
    x_hat, hist = state
    x_hat = _combine(ratios[self.n - 1], preds[self.n - 1], x_hat, hist)
    if self.options.denoise:
      return self._denoiser(score_fn)(x_hat, self.n)
    return self._a(self.n) * x_hat


def get_dpm_solver_pp_sampler(sde: SDE, shape, options: DPMSolverPPOptions | None = None, **overrides):
  """DPM-Solver++(1M/2M/3M), the multistep data-prediction solver (Lu et al. 2022b, Alg. 2; 3M as in its code;
  ``DPMSolverPPOptions``). Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)`` with nfe = N + denoise."""
  return steps.sampler_from_stepper(dpm_solver_pp_stepper(sde, shape, DPMSolverPPOptions.build(options, **overrides)))


def get_unipc_sampler(sde: SDE, shape, options: UniPCOptions | None = None, **overrides):
  """UniPC-bh2 (or bh1: ``variant``) with the data prediction (Zhao et al. 2023, Alg. 3; ``UniPCOptions``): UniP-p predictor, UniC
  corrector of order p + 1 reusing the next step's model evaluation (no extra NFE; none after the last step).
  Returns ``sample_fn(key, score_fn) -> (x, nfe)``, nfe = N + denoise."""
  return steps.sampler_from_stepper(unipc_stepper(sde, shape, UniPCOptions.build(options, **overrides)))


def dpm_solver_pp_stepper(sde: SDE, shape, options: MultistepOptions) -> MultistepStepper:
  return MultistepStepper(sde, shape, options, dpm_solver_pp_tables, DPM_SOLVER_PP_FINAL_BELOW)


def unipc_stepper(sde: SDE, shape, options: UniPCOptions) -> MultistepStepper:
  variant = getattr(options, "variant", "bh2")
  return MultistepStepper(sde, shape, options, lambda lams, orders: unipc_tables(lams, orders, variant))
