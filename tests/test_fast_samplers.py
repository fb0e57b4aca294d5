"""The fast samplers (EDM Heun, DPM-Solver++ 1/2/3M, UniPC): exact NFE budgets, convergence orders on a
single Gaussian (closed-form probability-flow ODE), degenerate orders, grids, and oracle accuracy
at 10 and 20 NFE with thresholds from the floor of exact samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import example_mixture
from samplers import fit_grid, multistep, schedules
from tests.conftest import EvaluationCounter, ORACLE_SAMPLES, SDE_IDS, all_sdes

FAST = {"edm_heun": {}, "dpm_solver_pp": {}, "dpm_solver_pp_3m": dict(order=3), "unipc": {},
        "unipc_3": dict(order=3)}


def _method(name):
  return name.split("_3")[0] if name.endswith(("_3m", "_3")) else name


# ------------------------------------------------------------------------------ NFE budgets
@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("denoise", [True, False])
def test_the_budget_is_exact_and_counts_every_score_evaluation(name, denoise, key):
  sde, mixture = sde_lib.subVPSDE(), example_mixture(2)
  for nfe in ((10,) if denoise else (3,)):
    counter = EvaluationCounter()
    sample_fn = samplers.get_sampler(sde, (8, 2), _method(name), nfe=nfe, denoise=denoise, **FAST[name])
    x, used = jax.jit(lambda k: sample_fn(k, counter.wrap(mixture.score_fn(sde))))(key)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert counter.count == int(used) == nfe, (name, nfe, counter.count, int(used))
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("method", samplers.FAST_METHODS)
def test_a_budget_too_small_for_one_step_is_refused(method):
  with pytest.raises(ValueError, match="nfe"):
    samplers.get_sampler(sde_lib.VPSDE(), (4, 2), method, nfe=1)
  with pytest.raises(ValueError, match="nfe"):
    samplers.get_sampler(sde_lib.VPSDE(), (4, 2), method, nfe=0)


def test_edm_heun_spends_an_odd_remainder_on_one_euler_step():
  from samplers.heun import heun_budget
  assert heun_budget(10, True) == (4, 1) and heun_budget(11, True) == (5, 0)
  assert heun_budget(10, False) == (5, 0) and heun_budget(3, False) == (1, 1)


# ------------------------------------------------------------------------------ orders
def test_step_orders_warm_up_and_lower_the_final_steps():
  assert multistep.step_orders(6, 3, True) == [1, 2, 3, 3, 2, 1]
  assert multistep.step_orders(6, 3, False) == [1, 2, 3, 3, 3, 3]
  assert multistep.step_orders(2, 3, True) == [1, 1]
  assert multistep.step_orders(1, 2, False) == [1]


def test_lower_order_final_acts_only_below_the_references_step_count(key):
  """DPM-Solver++'s reference lowers the final orders only when steps < 10 (dpm-solver's ``DPM_Solver.sample``);
  UniPC's at every step count (UniPC's ``UniPC.sample``)."""
  below = multistep.DPM_SOLVER_PP_FINAL_BELOW
  assert below == 10
  assert multistep.step_orders(9, 3, True, below) == [1, 2, 3, 3, 3, 3, 3, 2, 1]
  assert multistep.step_orders(10, 3, True, below) == [1, 2] + [3] * 8
  assert multistep.step_orders(12, 3, True) == [1, 2] + [3] * 8 + [2, 1]
  sde, mixture = sde_lib.VPSDE(), example_mixture(2)

  def run(method, n, lower):
    fn = samplers.get_sampler(sde, (32, 2), method, num_steps=n, order=3, lower_order_final=lower)
    return np.asarray(jax.jit(lambda k: fn(k, mixture.score_fn(sde)))(key)[0])

  np.testing.assert_array_equal(run("dpm_solver_pp", below, True), run("dpm_solver_pp", below, False))
  assert not np.array_equal(run("dpm_solver_pp", below - 1, True), run("dpm_solver_pp", below - 1, False))
  assert not np.array_equal(run("unipc", below + 2, True), run("unipc", below + 2, False))


def _gaussian_case(sde, c=0.8, mu=1.5):
  """Data N(mu, c^2) in 1-D (batch of 64 prior draws): score and the exact probability-flow map.

  In x_hat = x/a the ODE is dx_hat/dsigma = (x_hat - D)/sigma with D = mu + c^2 (x_hat - mu)/(c^2 + sigma^2),
  solved by x_hat(sigma) - mu = (x_hat(sigma_0) - mu) sqrt((c^2 + sigma^2)/(c^2 + sigma_0^2)).
  """
  def score_fn(x, t):
    a, s = sde.marginal_coefs(t)
    return -(x - a[:, None] * mu) / (a[:, None] ** 2 * c**2 + s[:, None] ** 2)

  def exact(x_T, sigma_hi, sigma_lo, a_T, a_lo):
    x_hat = x_T / a_T
    return a_lo * (mu + (x_hat - mu) * np.sqrt((c**2 + sigma_lo**2) / (c**2 + sigma_hi**2)))

  return score_fn, exact


@pytest.mark.parametrize("method,order,expected,variant", [
    ("dpm_solver_pp", 1, 1, None), ("dpm_solver_pp", 2, 2, None), ("dpm_solver_pp", 3, 3, None),
    ("unipc", 1, 2, "bh2"), ("unipc", 2, 3, "bh2"), ("unipc", 1, 2, "bh1"), ("unipc", 2, 3, "bh1")])
def test_error_shrinks_at_the_solvers_order_as_steps_double(method, order, expected, variant, key):
  """A high-order solver's global error on the closed-form Gaussian ODE falls as h^order (UniPC-p: p + 1).

  From 16 to 64 steps. (Far beyond, 3M's error falls as h^2: its first, warm-up step is 1st order, a
  local O(h^2) error that the multistep method carries to the end, as in Lu et al. 2022b's solver.)"""
  sde = sde_lib.VPSDE()
  score_fn, exact = _gaussian_case(sde)
  t_min = 0.05
  hi, lo = schedules.sigma_ends(sde, t_min, 0.002)
  t_lo = float(sde.t_from_sigma(jnp.asarray(lo)))
  a_T, a_lo = float(sde.marginal_coefs(jnp.asarray(1.0))[0]), float(sde.marginal_coefs(jnp.asarray(t_lo))[0])
  x_T = np.asarray(sde.prior_std * samplers.common.per_sample_normal(samplers.common.per_sample_keys(key, 64), 0,
                                                                    (64, 1)))
  want = exact(x_T, hi, lo, a_T, a_lo)
  errors = []
  steps = (16, 32, 64)
  for n in steps:
    sample_fn = samplers.get_sampler(sde, (64, 1), method, num_steps=n, order=order, grid="logsnr", t_min=t_min,
                                     denoise=False, lower_order_final=False, **({"variant": variant} if variant else {}))
    x, _ = jax.jit(lambda k: sample_fn(k, score_fn))(key)
    errors.append(float(np.max(np.abs(np.asarray(x) - want))))
  slopes = -np.diff(np.log(errors)) / np.log(2)
  assert slopes[-1] > expected - 0.35, (errors, slopes)


def test_third_order_weights_integrate_a_quadratic_data_prediction_exactly():
  """x' = e^{-h} x + int_0^h e^{tau - h} m(lambda + tau) dtau (Lu et al. 2022b eq. 8 in x_hat) is exact for
  m quadratic in lambda with 3M's weights on a non-uniform grid. (2M's -phi_1/2 D1_0, the "dpmsolver"
  form of Lu et al. 2022b, only approximates the linear term's phi_2 h m', so it is not tested here.)"""
  from scipy.integrate import quad
  lams = np.array([0.1, 0.6, 1.5, 2.2])
  for order, m in ((3, lambda l: 1.3 * l**2 - 0.4 * l + 2.0),):
    ratios, preds = multistep.dpm_solver_pp_tables(jnp.asarray(lams, jnp.float32), [1, 2, order])
    k = 2
    got = float(preds[k, 0]) * m(lams[k]) + float(preds[k, 1]) * m(lams[k - 1]) + float(preds[k, 2]) * m(lams[k - 2])
    want = quad(lambda l: np.exp(-(lams[k + 1] - l)) * m(l), lams[k], lams[k + 1])[0]
    assert abs(got - want) < 1e-4 * abs(want), (order, got, want)
    assert abs(float(ratios[k]) - np.exp(-(lams[k + 1] - lams[k]))) < 1e-6


def test_degenerate_orders_reduce_to_the_lower_methods(key):
  """3M with one or two steps is DDIM / 1M (warm-up and final orders); without lower_order_final two
  steps are 1M then 2M, exactly 2M's; UniPC order 1 with one step is DDIM (no corrector after the last step)."""
  sde, mixture = sde_lib.VPSDE(), example_mixture(2)

  def run(method, **options):
    fn = samplers.get_sampler(sde, (32, 2), method, **options)
    return np.asarray(jax.jit(lambda k: fn(k, mixture.score_fn(sde)))(key)[0])

  np.testing.assert_allclose(run("dpm_solver_pp", nfe=3, order=3), run("dpm_solver_pp", nfe=3, order=1), atol=1e-5)
  np.testing.assert_allclose(run("dpm_solver_pp", nfe=3, order=3, lower_order_final=False),
                             run("dpm_solver_pp", nfe=3, order=2, lower_order_final=False), atol=1e-5)
  np.testing.assert_allclose(run("unipc", nfe=2, order=3), run("dpm_solver_pp", nfe=2, order=1), atol=1e-5)


# ------------------------------------------------------------------------------ grids
def test_grids_span_the_same_levels_and_fitted_grids_load_by_name(tmp_path):
  sde = sde_lib.VPSDE()
  hi, lo = schedules.sigma_ends(sde, 1e-3, 0.002)
  for grid in ("edm", "logsnr", "fitted:vp_gmm2"):
    s = schedules.sigma_grid(sde, 9, grid)
    assert len(s) == 10 and np.all(np.diff(s) < 0), grid
    np.testing.assert_allclose([s[0], s[-1]], [hi, lo], rtol=1e-6)
  stored = schedules.load_fitted("fitted:vp_gmm2")["grids"]["9"]
  np.testing.assert_allclose(schedules.sigma_grid(sde, 9, "fitted:vp_gmm2"), stored, rtol=1e-6)
  path = tmp_path / "mine.json"
  fit_grid.save_grid(str(path), {4: np.array([80.0, 10.0, 1.0, 0.1, 0.01])})
  s = schedules.sigma_grid(sde_lib.VESDE(), 8, f"fitted:{path}")
  assert len(s) == 9 and np.all(np.diff(s) < 0)
  with pytest.raises(ValueError, match="no fitted grid file"):
    samplers.get_sampler(sde, (4, 2), "unipc", grid="fitted:no_such_grid")
  with pytest.raises(ValueError, match="grid must be"):
    samplers.get_sampler(sde, (4, 2), "dpm_solver_pp", grid="karras")


# ------------------------------------------------------------------------------ the oracle
N_SAMPLES = ORACLE_SAMPLES
TOLERANCE = 1.5
# The best configuration per budget (see benchmarks/results/fast_samplers_gmm.md).
BEST = dict(method="unipc", order=2)
SPREAD = {10: 0.10, 20: 0.05}





@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_ten_and_twenty_nfe_reproduce_the_mixture(sde, mixture, floor, key):
  """At 10 NFE mode-weight TV <= 1.5x the floor and every mode's spread within 10% of the converged
  solve's; at 20 NFE within 5% (fitted grid, UniPC-2)."""
  # RF: the probability-flow ODE of x / a against sigma is the same for every process (Karras et al. 2022, eq. 4),
  # so VP's grid in sigma serves it (sigma(T) 148 vs 152)
  name = {"VESDE": "ve", "VPSDE": "vp", "subVPSDE": "subvp", "RectifiedFlow": "vp"}[type(sde).__name__]
  score_fn = mixture.score_fn(sde)
  ref_fn = samplers.get_sampler(sde, (N_SAMPLES, 2), "dpm_solver_pp", num_steps=400, grid="logsnr")
  ref = jax.jit(lambda k: ref_fn(k, score_fn))(key)[0]
  for nfe, bound in SPREAD.items():
    fn = samplers.get_sampler(sde, (N_SAMPLES, 2), BEST["method"], nfe=nfe, order=BEST["order"],
                              grid=f"fitted:{name}_gmm2")
    x, used = jax.jit(lambda k: fn(k, score_fn))(key)
    assert int(used) == nfe
    tv = mixture.mode_metrics(x)["tv"]
    assert tv <= TOLERANCE * floor["tv"], (nfe, tv, floor["tv"])
    assert mixture.spread_bias(x, ref) <= bound, (nfe, mixture.spread_bias(x, ref))


@pytest.mark.parametrize("variant", multistep.UNIPC_VARIANTS)
def test_both_unipc_variants_reproduce_the_mixture(variant, mixture, floor, key):
  """UniPC-bh1 and -bh2 (B(h) = -h, e^{-h} - 1; Zhao et al. 2023 sec. 3.3) on the oracle at 40 NFE (log-SNR
  grid): mode-weight TV <= 1.5x the floor of exact samples and every mode's spread within 5% of a 400-step
  solve's (bh2 on this grid: 9.6% at 20 NFE, README)."""
  sde = sde_lib.VPSDE()
  score_fn = mixture.score_fn(sde)
  ref_fn = samplers.get_sampler(sde, (N_SAMPLES, 2), "dpm_solver_pp", num_steps=400, grid="logsnr")
  ref = jax.jit(lambda k: ref_fn(k, score_fn))(key)[0]
  fn = samplers.get_sampler(sde, (N_SAMPLES, 2), "unipc", nfe=40, variant=variant)
  x = jax.jit(lambda k: fn(k, score_fn))(key)[0]
  assert mixture.mode_metrics(x)["tv"] <= TOLERANCE * floor["tv"]
  assert mixture.spread_bias(x, ref) <= SPREAD[20], mixture.spread_bias(x, ref)
  other = samplers.get_sampler(sde, (N_SAMPLES, 2), "unipc", nfe=40, variant="bh1" if variant == "bh2" else "bh2")
  assert not np.array_equal(np.asarray(x), np.asarray(jax.jit(lambda k: other(k, score_fn))(key)[0]))


def test_a_bad_unipc_variant_fails_in_one_line():
  with pytest.raises(ValueError, match="variant must be one of") as err:
    samplers.get_sampler(sde_lib.VPSDE(), (4, 2), "unipc", variant="bh3")
  assert "\n" not in str(err.value)
