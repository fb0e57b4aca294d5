"""Processes given by their schedule x(t) = alpha(t) x(0) + sigma(t) eps (sde_lib.ScheduleSDE, RectifiedFlow,
CosineSDE; issue 25): bad schedules are refused in one line; the derived f and g obey the moment equations and
their closed forms; the hold after t_end, sigma's inverse and the ladder; every sampler family and the exact
likelihood on the oracle; every inverse-problem algorithm on rectified flow; the config names."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import gmm
from data_lib.gmm import example_mixture
from testkit.posterior_metrics import posterior_floor, posterior_metrics
from tests.conftest import ORACLE_SAMPLES, all_sdes

EPS32 = float(np.finfo(np.float32).eps)


# ------------------------------------------------------------------------------------ the schedules
def quadratic_sde(N: int = 1000, alpha_min: float = 0.0067) -> sde_lib.ScheduleSDE:
  """alpha = 1 - t^2, sigma = t: neither variance preserving nor straight (alpha = 1 - sigma^2). sigma / alpha =
  t / (1 - t^2) grows; alpha reaches alpha_min at t_end = sqrt(1 - alpha_min), where sigma = 0.9966 (the prior's
  std is 1, as rectified flow's 0.9933 at its t_end). Closed forms: h = -2 alpha'/alpha = 4 t / (1 - t^2),
  g^2 = 2 sigma (sigma' - alpha'/alpha sigma) = 2 t (1 + t^2) / (1 - t^2)."""
  return sde_lib.ScheduleSDE(lambda t: 1.0 - jnp.square(t), lambda t: t, N=N, alpha_min=alpha_min)


def _quadratic_closed(t):
  t = np.asarray(t, np.float64)
  return 1 - t**2, t, 4 * t / (1 - t**2), 2 * t * (1 + t**2) / (1 - t**2)


def _cosine_closed(t):
  """a = cos(pi t / 2), s = sin(pi t / 2): h = g^2 = pi tan(pi t / 2)."""
  u = 0.5 * math.pi * np.asarray(t, np.float64)
  return np.cos(u), np.sin(u), math.pi * np.tan(u), math.pi * np.tan(u)


SCHEDULES = {"quadratic": (quadratic_sde, _quadratic_closed,
                           lambda a_min: math.sqrt(1 - a_min),
                           lambda r: 2 * r / (1 + np.sqrt(1 + 4 * r**2))),       # t / (1 - t^2) = r, solved
             "cosine": (sde_lib.CosineSDE, _cosine_closed,
                        lambda a_min: 2 / math.pi * math.acos(a_min),
                        lambda r: 2 / math.pi * np.arctan(r))}
NAMES = list(SCHEDULES)


# ------------------------------------------------------------------------------ 1. bad schedules
def _line(t):
  return 1.0 - t


BAD = [
    # (alpha_fn, sigma_fn, keywords, the field in the message)
    (lambda t: (1 - t) * (1 + 0.5 * jnp.sin(2 * math.pi * t)), lambda t: t, {}, r"alpha_fn must be non-increasing"),
    (_line, lambda t: t * (1 + 0.5 * jnp.sin(2 * math.pi * t)), {}, r"sigma_fn must be non-decreasing"),
    (_line, lambda t: 0.5 * t, {}, r"sigma_fn\(T\) must be 1"),
    (lambda t: 0.9 * (1 - t), lambda t: t, {}, r"alpha_fn\(0\) must be 1"),
    (_line, lambda t: jnp.where(t < 0.5, t, jnp.nan), {}, r"sigma_fn must map t in \[0, T\] elementwise to finite"),
    (lambda t: jnp.where(t < 1, 1 - t, jnp.inf), lambda t: t, {}, r"alpha_fn must map t .* to finite values"),
    (lambda t: jnp.float32(1.0), lambda t: t, {}, r"alpha_fn must map t in \[0, T\] elementwise"),   # not elementwise
    (_line, lambda t: t, dict(alpha_min=0.0), r"alpha_min must be a finite number > 0"),
    (_line, lambda t: t, dict(alpha_min=-0.1), r"alpha_min must be a finite number > 0"),
    (_line, lambda t: t, dict(alpha_min=float("nan")), r"alpha_min must be a finite number > 0"),
    (_line, lambda t: t, dict(alpha_min=1.0), r"alpha_min must be in \(0, 1\)"),
    (_line, lambda t: t, dict(alpha_min=1.5), r"alpha_min must be in \(0, 1\)"),
    (_line, lambda t: t, dict(T=0.0), r"^T must be a finite number > 0"),
    (_line, lambda t: t, dict(T=-1.0), r"^T must be a finite number > 0"),
    (_line, lambda t: t, dict(N=0), r"^N must be an integer >= 1"),
    # both flat on [0.25, 0.7]: monotone, but sigma / alpha stands still there (g = 0, t(sigma) ambiguous)
    (lambda t: jnp.clip(1 - 2 * t, 0.5, 1) * jnp.where(t > 0.7, 1 - (t - 0.7) * 3.3, 1.0),
     lambda t: jnp.clip(2 * t, 0, 0.5) + jnp.where(t > 0.7, (t - 0.7) * 5 / 3, 0.0), {},
     r"sigma_fn / alpha_fn must increase"),
]


@pytest.mark.parametrize("alpha_fn, sigma_fn, kwargs, match", BAD,
                         ids=["alpha_bump", "sigma_dip", "sigma_T", "alpha_0", "sigma_nan", "alpha_inf",
                              "alpha_scalar", "alpha_min_0", "alpha_min_neg", "alpha_min_nan", "alpha_min_1",
                              "alpha_min_big", "T_0", "T_neg", "N_0", "ratio_flat"])
def test_bad_schedules_raise_one_line_naming_the_field(alpha_fn, sigma_fn, kwargs, match):
  with pytest.raises(ValueError, match=match) as err:
    sde_lib.ScheduleSDE(alpha_fn, sigma_fn, **kwargs)
  assert "\n" not in str(err.value)


def test_subclasses_check_their_arguments_too():
  for cls in (sde_lib.RectifiedFlow, sde_lib.CosineSDE):
    for kwargs, match in ((dict(alpha_min=0.0), "alpha_min"), (dict(alpha_min=1.0), "alpha_min"), (dict(N=0), "^N")):
      with pytest.raises(ValueError, match=match) as err:
        cls(**kwargs)
      assert "\n" not in str(err.value)


# ---------------------------------------------------------------- 2. the derived SDE and the hold
@pytest.mark.parametrize("name", NAMES)
def test_the_hold_time_is_where_alpha_reaches_alpha_min(name):
  build, _, t_end, _ = SCHEDULES[name]
  for a_min in (0.0067, 0.05):
    sde = build(alpha_min=a_min)
    np.testing.assert_allclose(sde.t_end, t_end(a_min), rtol=4 * EPS32)
    assert sde.t_end <= sde.T
  # A schedule whose alpha(T) stays above alpha_min is not held.
  assert sde_lib.ScheduleSDE(lambda t: 1 - 0.5 * t, lambda t: t).t_end == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_moment_odes_and_closed_forms_hold_below_t_end(name):
  """a' = -h a / 2 and (s^2)' = -h s^2 + g^2 (Sarkka & Solin 2019, eq. 5.51) with the derived h, g; and h, g
  equal their closed forms. Tolerance: float32 rounding of terms of size h s^2 and g^2 (16 ulps of the largest)
  on top of rtol 2e-3, as tests/test_sde.py."""
  build, closed, _, _ = SCHEDULES[name]
  sde = build()
  t = jnp.linspace(0.02, sde.t_end - 0.01, 40)
  (a, s), (da, ds) = jax.jvp(sde.marginal_coefs, (t,), (jnp.ones_like(t),))
  h, g = np.asarray(sde.drift_coef(t), np.float64), np.asarray(sde.diffusion(t), np.float64)
  a, s, da, ds = (np.asarray(v, np.float64) for v in (a, s, da, ds))
  np.testing.assert_allclose(da, -0.5 * h * a, rtol=2e-3, atol=1e-7)
  scale = 16 * EPS32 * np.maximum(h * s**2, g**2)
  assert np.all(np.abs(2 * s * ds - (-h * s**2 + g**2)) <= 2e-3 * np.abs(2 * s * ds) + scale)
  a_c, s_c, h_c, g2_c = closed(t)
  np.testing.assert_allclose(a, a_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s, s_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, h_c, rtol=1e-4)
  np.testing.assert_allclose(g**2, g2_c, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_the_process_is_held_after_t_end(name, key):
  """For t in (t_end, T]: the marginal (coefficients, exact density of the oracle) is that of t_end, and
  f = g = 0, so the reverse SDE and the probability flow do not move."""
  sde = SCHEDULES[name][0]()
  after = jnp.linspace(sde.t_end, sde.T, 7)[1:]
  at = jnp.full_like(after, sde.t_end)
  for got, want in zip(sde.marginal_coefs(after), sde.marginal_coefs(at)):
    np.testing.assert_array_equal(got, want)
  mixture = example_mixture(2)
  x = mixture.sample_t(key, 6, sde.t_end, sde)
  np.testing.assert_array_equal(mixture.log_prob_t(x, after, sde), mixture.log_prob_t(x, at, sde))
  np.testing.assert_array_equal(sde.drift_coef(after), 0.0)
  np.testing.assert_array_equal(sde.diffusion(after), 0.0)
  for flow in (False, True):
    drift, diffusion = sde.reverse(mixture.score_fn(sde), probability_flow=flow).sde(x, after)
    np.testing.assert_array_equal(drift, 0.0)
    np.testing.assert_array_equal(diffusion, 0.0)
  # Just before t_end it still moves.
  before = jnp.asarray([0.999 * sde.t_end])
  assert float(sde.drift_coef(before)[0]) > 0 and float(sde.diffusion(before)[0]) > 0


@pytest.mark.parametrize("name", NAMES)
def test_t_from_sigma_inverts_sigma_up_to_t_end(name):
  """The subclass's closed form (CosineSDE), the generic bisection (the same schedule as a plain ScheduleSDE,
  and the quadratic one) and the solved closed form agree, and invert sigma(t) = s/a on [0, t_end]; beyond
  t_end sigma is constant and maps back to t_end. Tolerance: a float32 evaluation of s/a is good to a few ulps,
  and d log sigma / d log t >= 1/2 on both schedules, so t is good to 4x that: rtol 40 ulps."""
  build, _, _, t_of_ratio = SCHEDULES[name]
  sde = build()
  generic = sde_lib.ScheduleSDE(sde.alpha_fn, sde.sigma_fn)
  t = jnp.concatenate([jnp.linspace(0.01, sde.t_end, 60), jnp.linspace(sde.t_end, sde.T, 5)[1:]])
  held = np.minimum(np.asarray(t), sde.t_end)
  sigma = sde.sigma(t)
  for fn in (sde.t_from_sigma, generic.t_from_sigma):
    np.testing.assert_allclose(fn(sigma), held, rtol=40 * EPS32, atol=0)
  np.testing.assert_allclose(t_of_ratio(np.asarray(sigma, np.float64)), held, rtol=40 * EPS32)
  # The bisection stops at a bracket of width t_end 2^-40.
  np.testing.assert_allclose(sde.t_from_sigma(jnp.asarray([0.0, 1e9])), [0.0, sde.t_end], rtol=40 * EPS32,
                             atol=2.0**-40)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("N", [10, 1000])
def test_the_ladder_is_the_marginal_at_i_plus_one_steps(name, N):
  """Level i of discrete_coefs is (a, s) at t = (i + 1) T / N, held at t_end (closed forms, float64)."""
  build, closed, _, _ = SCHEDULES[name]
  sde = build(N=N)
  a_i, s_i = sde.discrete_coefs()
  assert a_i.shape == s_i.shape == (N,) and a_i.dtype == np.float64
  t = np.minimum(np.arange(1, N + 1) * sde.T / N, sde.t_end)
  a_c, s_c, _, _ = closed(t)
  np.testing.assert_allclose(a_i, a_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s_i, s_c, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ 3. the oracle
N_SAMPLES = ORACLE_SAMPLES
TOLERANCE = 1.5          # within 1.5x the 99% noise floor of exact samples of the same size (tests/test_samplers.py)

SAMPLERS = {
    "pc_euler_maruyama": ("pc", dict(predictor="euler_maruyama", corrector="none", num_steps=1000), 1001),
    "ode_tsit5": ("ode", dict(rtol=1e-5, atol=1e-5), None),
    "edm_heun": ("edm_heun", dict(num_steps=18), 35),
    "dpm_solver_pp": ("dpm_solver_pp", dict(num_steps=20, denoise=False), 20),
    "unipc": ("unipc", dict(nfe=20, grid="logsnr"), 20),
}



@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(SAMPLERS))
@pytest.mark.slow
def test_every_sampler_family_recovers_the_mixture(name, case, mixture, floor, key):
  sde = SCHEDULES[name][0]()
  method, options, max_nfe = SAMPLERS[case]
  sample_fn = samplers.get_sampler(sde, (N_SAMPLES, 2), method, **options)
  x, nfe = jax.jit(sample_fn, static_argnums=1)(key, mixture.score_fn(sde))
  for metric, value in mixture.mode_metrics(x).items():
    assert value <= TOLERANCE * floor[metric], (name, case, metric, value, floor[metric])
  if max_nfe is not None:
    assert 0 < int(nfe) <= max_nfe
  if case == "unipc":
    assert int(nfe) == 20


LIKELIHOOD_EPS = 1e-5


@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("name", NAMES)
def test_exact_likelihood_matches_the_oracle(name, dim, key):
  """As tests/test_likelihood.py: logp - prior_logp(z) + log p_T(z) - log p_eps(x) is solver error alone (the
  prior mismatch separated), within 1e-4 nats/dim at rtol = atol = 1e-5."""
  sde = SCHEDULES[name][0]()
  mixture = example_mixture(dim)
  x = mixture.sample(key, 64)
  likelihood_fn = samplers.get_likelihood_fn(sde, rtol=1e-5, atol=1e-5, t_min=LIKELIHOOD_EPS, divergence="exact")
  logp, z, nfe = jax.jit(likelihood_fn, static_argnums=1)(key, mixture.score_fn(sde), x)
  log_pT = mixture.log_prob_t(z, jnp.full((64,), sde.T), sde)
  exact = mixture.log_prob_t(x, jnp.full((64,), LIKELIHOOD_EPS), sde)
  solver = np.asarray(logp - sde.prior_logp(z) + log_pT - exact, np.float64)
  error = float(np.mean(np.abs(solver))) / dim
  assert np.all(np.isfinite(np.asarray(logp)))
  assert error <= 1e-4, (name, dim, error)
  assert int(nfe) > 0


# --------------------------------------------------------------- 4. conditioning on rectified flow
IMAGE = (4, 4, 1)
N_POSTERIOR = 256
# One budget per algorithm, the same on both processes.
BUDGETS = {"replacement": dict(num_steps=50), "repaint": dict(num_steps=25, n_resample=4),
           "smc": dict(n_particles=4, num_steps=50), "ddrm": dict(num_steps=20), "pigdm": dict(num_steps=50),
           "dps": dict(num_steps=50)}
NOISE = {"replacement": 0.0, "repaint": 0.0, "smc": 0.1, "ddrm": 0.1, "pigdm": 0.1, "dps": 0.1}


def _image_score(mixture, sde):
  flat = mixture.score_fn(sde)
  return lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def _superres_case(noise):
  """x2 super-resolution of 4x4x1 images under a 3-mode mixture whose modes differ mostly where A does not look
  (as tests/test_inverse.py), one observation y repeated; its exact posterior."""
  obs = samplers.make_observation("superres", IMAGE, noise)
  A = np.asarray(obs.forward(jnp.eye(16).reshape((16,) + IMAGE))).reshape(16, -1).T
  row = np.linalg.pinv(A) @ A
  raw = np.random.default_rng(0).normal(size=(3, 16))
  mixture = gmm.GaussianMixture(np.array([0.5, 0.3, 0.2]), 2.0 * raw @ (np.eye(16) - row) + 0.5 * raw @ row,
                                np.stack([0.05 * np.eye(16)] * 3))
  truth = mixture.sample(jax.random.key(7), 1).reshape((1,) + IMAGE)
  y1 = obs.forward(truth) + noise * jax.random.normal(jax.random.key(8), obs.forward(truth).shape)
  post = mixture.posterior(A, np.asarray(y1).reshape(-1), noise)
  return mixture, obs, jnp.repeat(y1, N_POSTERIOR, axis=0), post


def test_every_inverse_algorithm_has_a_budget():
  assert set(BUDGETS) == set(samplers.INVERSE_ALGORITHMS) == set(NOISE)


@pytest.mark.parametrize("algorithm", list(BUDGETS))
@pytest.mark.slow
def test_inverse_algorithms_run_on_rectified_flow_unchanged(algorithm):
  """Every algorithm of get_inverse_solver on rectified flow gives finite samples whose sample mean is no
  further from the exact posterior mean than 1.5x the same algorithm's on VP (same budget, keys and y), or than
  1.5x the sampling noise of that distance (its 99% floor over exact posterior samples of the same size) when
  VP's is below that. Noise-free replacement meets A x = y."""
  mixture, obs, y, post = _superres_case(NOISE[algorithm])
  shape = (N_POSTERIOR,) + IMAGE
  floor = posterior_floor(post, mixture, N_POSTERIOR, jax.random.key(9))["mean_error"]
  errors = {}
  for label, sde in (("vp", all_sdes()[1]), ("rf", sde_lib.RectifiedFlow())):
    solve = samplers.get_inverse_solver(sde, shape, obs, algorithm, **BUDGETS[algorithm])
    score = _image_score(mixture, sde)
    x, nfe = jax.jit(lambda k, y: solve(k, score, y))(jax.random.key(10), y)
    x = np.asarray(x)
    assert np.all(np.isfinite(x)), (algorithm, label)
    assert int(nfe) > 0
    errors[label] = posterior_metrics(x.reshape(N_POSTERIOR, -1), post, mixture)["mean_error"]
    if algorithm == "replacement":
      np.testing.assert_allclose(obs.forward(jnp.asarray(x)), y, atol=2e-5)
  bound = TOLERANCE * max(errors["vp"], floor)
  assert errors["rf"] <= bound, (algorithm, errors, floor)


@pytest.mark.slow
def test_inpainter_on_rectified_flow_keeps_the_observed_pixels(key):
  sde = sde_lib.RectifiedFlow()
  mixture = example_mixture(2)
  n = 64
  known = jnp.zeros((n, 2)).at[:, 0].set(1.5)
  mask = jnp.zeros((n, 2)).at[:, 0].set(1.0)
  for algorithm, options in (("replacement", dict(num_steps=20)), ("smc", dict(num_steps=10, n_particles=2))):
    fn = samplers.get_inpainter(sde, (n, 2), "pc", algorithm, **options)
    x, _ = jax.jit(lambda k: fn(k, mixture.score_fn(sde), known, mask))(key)
    x = np.asarray(x)
    assert np.all(x[:, 0] == 1.5) and np.all(np.isfinite(x)), algorithm


# --------------------------------------------------------------------------------- 5. configuration
@pytest.mark.parametrize("name, cls", [("rectified_flow", sde_lib.RectifiedFlow), ("cosine", sde_lib.CosineSDE),
                                       ("Rectified_Flow", sde_lib.RectifiedFlow)])
def test_get_sde_builds_schedule_processes_from_a_config(name, cls):
  config = ml_collections.ConfigDict({"training": {"sde": name}, "model": {"num_scales": 250}})
  sde = sde_lib.get_sde(config)
  assert type(sde) is cls and sde.N == 250 and sde.T == 1.0


@pytest.mark.parametrize("name, cls", [("rectified_flow", sde_lib.RectifiedFlow), ("cosine", sde_lib.CosineSDE)])
def test_the_schema_accepts_the_schedule_names(name, cls):
  import importlib

  import schema
  config = importlib.import_module("configs.vp.digits").get_config()
  config.training.sde = name
  typed = schema.parse_config(config)
  assert typed.sde.name == name
  sde = sde_lib.get_sde(typed)
  assert type(sde) is cls and sde.N == typed.sde.num_scales
  assert type(sde_lib.get_sde(typed.sde)) is cls


def test_an_unknown_sde_name_lists_the_schedule_processes():
  config = ml_collections.ConfigDict({"training": {"sde": "flow"}, "model": {"num_scales": 10}})
  with pytest.raises(ValueError, match=r"training.sde must be one of .*'cosine'.*'rectified_flow'") as err:
    sde_lib.get_sde(config)
  assert "\n" not in str(err.value)
