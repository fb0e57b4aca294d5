"""The SDEs against their closed forms and against simulation of the forward SDE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sde_lib
from data_lib import GaussianMixture
from tests.conftest import SDE_IDS, all_sdes

SDES = all_sdes()


def _simulate_forward(sde, key, x0, n_steps, record_steps):
  """Euler-Maruyama paths of dx = f dt + g dw from x0 [n, D]; the states at ``record_steps``."""
  dt = sde.T / n_steps

  def step(x, inp):
    i, k = inp
    t = jnp.full(x.shape[:1], i * dt)
    drift, g = sde.sde(x, t)
    x = x + drift * dt + g[:, None] * jnp.sqrt(dt) * jax.random.normal(k, x.shape)
    return x, x

  _, path = jax.lax.scan(step, x0, (jnp.arange(n_steps), jax.random.split(key, n_steps)))
  return [path[s - 1] for s in record_steps]


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.slow
def test_marginal_prob_matches_simulated_forward_sde(sde, key):
  n, n_steps, x_data = 20000, 2000, 1.5
  x0 = jnp.full((n, 1), x_data)
  if isinstance(sde, sde_lib.VESDE):
    # score_sde's VE kernel N(x, sigma(t)^2) counts sigma_min^2 of noise already present at t = 0.
    x0 = x0 + sde.sigma_min * jax.random.normal(jax.random.key(1), x0.shape)
  # a held schedule's SDE is stiff just before it is held (RF: f = -x / (1 - t)): simulated up to 0.9 there
  times = [0.1, 0.5, 1.0 if getattr(sde, "t_end", sde.T) == sde.T else 0.9]
  states = _simulate_forward(sde, key, x0, n_steps, [round(t * n_steps) for t in times])
  for t, x in zip(times, states):
    mean, std = sde.marginal_prob(jnp.full((1, 1), x_data), jnp.array([t]))
    mean, std = float(mean[0, 0]), float(std[0])
    emp_mean, emp_std = float(jnp.mean(x)), float(jnp.std(x))
    assert abs(emp_mean - mean) < 4 * std / np.sqrt(n), (t, emp_mean, mean)
    assert abs(emp_std - std) < 4 * std / np.sqrt(2 * n), (t, emp_std, std)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_moment_odes_hold(sde):
  """a' = -h a / 2 and (s^2)' = -h s^2 + g^2 (Sarkka & Solin 2019, eq. 5.51) tie f and g to a and s."""
  t = jnp.linspace(0.05, 1.0, 20)
  (a, s), (da, ds) = jax.jvp(sde.marginal_coefs, (t,), (jnp.ones_like(t),))
  h, g = sde.drift_coef(t), sde.diffusion(t)
  np.testing.assert_allclose(da, -0.5 * h * a, rtol=2e-3, atol=1e-7)
  # atol: near t = 1 the VP right side cancels (20 - 20 (1 - 4e-5)), so its float32 rounding, about
  # 4 h s^2 2^-24 = 5e-6, exceeds rtol there (jax 0.12 rounds it 2.2e-6 off; the terms are of order 1-20).
  np.testing.assert_allclose(2 * s * ds, -h * s**2 + g**2, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_sigma_and_its_inverse(sde):
  t = jnp.linspace(0.01, 1.0, 50)
  a, s = sde.marginal_coefs(t)
  np.testing.assert_allclose(sde.sigma(t), s / a, rtol=1e-6)
  held = jnp.minimum(t, getattr(sde, "t_end", sde.T))       # a held schedule's sigma is constant after t_end
  np.testing.assert_allclose(sde.t_from_sigma(sde.sigma(t)), held, rtol=2e-4, atol=1e-5)


def test_closed_forms_of_each_sde():
  t = jnp.array([0.3])
  ve, vp, subvp = SDES[:3]
  assert np.allclose(ve.sigma(t), 0.01 * 5000**0.3)
  assert np.allclose(ve.diffusion(t), 0.01 * 5000**0.3 * np.sqrt(2 * np.log(5000)))
  b = 0.1 * 0.3 + 0.5 * 0.09 * 19.9
  assert np.allclose(np.ravel(vp.marginal_coefs(t)), [np.exp(-b / 2), np.sqrt(1 - np.exp(-b))])
  assert np.allclose(np.ravel(subvp.marginal_coefs(t)), [np.exp(-b / 2), 1 - np.exp(-b)])
  assert np.allclose(vp.diffusion(t), np.sqrt(0.1 + 0.3 * 19.9))
  assert np.allclose(subvp.diffusion(t), np.sqrt((0.1 + 0.3 * 19.9) * (1 - np.exp(-2 * b))))


def _chain_marginal(sde):
  """(a_N, s_N) after running ``discretize`` at t_0..t_{N-1} from clean data, propagated exactly."""
  t = sde.discrete_time(jnp.arange(sde.N))
  ones = jnp.ones((sde.N, 1))
  f, G = sde.discretize(ones, t)
  scale = np.asarray(1.0 + f[:, 0], np.float64)          # x_i = scale_i x_{i-1} + G_i z (f is linear)
  a, var = 1.0, 0.0
  for c, g in zip(scale, np.asarray(G, np.float64)):
    a, var = c * a, c * c * var + g * g
  return a, np.sqrt(var)


@pytest.mark.parametrize("cls", [sde_lib.VESDE, sde_lib.VPSDE, sde_lib.subVPSDE], ids=SDE_IDS[:3])
def test_discretize_reproduces_marginal_at_T(cls):
  errors = []
  for n in (100, 1000):
    sde = cls(N=n)
    a, s = _chain_marginal(sde)
    a_T, s_T = (float(v[0]) for v in sde.marginal_coefs(jnp.array([1.0])))
    errors.append(abs(a - a_T) + abs(s - s_T) / s_T)
  if cls is sde_lib.VESDE:
    assert max(errors) < 1e-5                            # the SMLD chain is exact
  else:
    assert 6 < errors[0] / errors[1] < 14, errors      # O(1/N): ten times the levels, a tenth of the error
    assert errors[1] < 1e-3


def test_discrete_chains_are_smld_and_ddpm():
  ve, vp, subvp = SDES[:3]
  i = jnp.array([0, 1, 500, 999])
  t = ve.discrete_time(i)
  sig = np.exp(np.linspace(np.log(0.01), np.log(50.0), 1000))
  alpha, v = ve.transition_coefs(t)
  np.testing.assert_allclose(alpha, 1.0)
  np.testing.assert_allclose(v, sig[i] ** 2 - np.concatenate([[0.0], sig])[i] ** 2, rtol=1e-5)
  betas = np.linspace(0.1 / 1000, 20.0 / 1000, 1000)
  alpha, v = vp.transition_coefs(t)
  np.testing.assert_allclose(alpha, np.sqrt(1 - betas[i]), rtol=1e-6)
  np.testing.assert_allclose(v, betas[i], rtol=2e-3)
  for sde in SDES[1:3]:
    np.testing.assert_allclose(sde.langevin_alpha(t), 1 - betas[i], rtol=1e-6)
  assert np.all(np.asarray(subvp.transition_coefs(ve.discrete_time(jnp.arange(1000)))[1]) > 0)


@pytest.mark.parametrize("sde", all_sdes(N=50), ids=SDE_IDS)
def test_ancestral_step_maps_level_i_to_level_i_minus_1(sde, key):
  """For a point mass Tweedie's x_0 is exact, so one ancestral step must land on the previous level's marginal."""
  c, n = 2.0, 40000
  point = GaussianMixture([1.0], [[c]], [[1e-10]])
  score_fn = point.score_fn(sde, discrete=True)
  a, s, _, _ = (np.asarray(v, np.float64) for v in sde._ladder())
  for i in (1, 10, 49):
    t = jnp.full((n,), float(sde.discrete_time(i)))
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    x = a[i] * c + s[i] * jax.random.normal(k1, (n, 1))
    inv_alpha, v, std = sde.ancestral_step_coefs(t)
    x_prev = inv_alpha[:, None] * (x + v[:, None] * score_fn(x, t)) + std[:, None] * jax.random.normal(k2, x.shape)
    assert abs(float(jnp.mean(x_prev)) - a[i - 1] * c) < 4 * s[i - 1] / np.sqrt(n) + 1e-5
    assert abs(float(jnp.std(x_prev)) - s[i - 1]) < 4 * s[i - 1] / np.sqrt(2 * n) + 1e-5


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_ancestral_step_between_arbitrary_times(sde, key):
  """The same posterior step between continuous times t > t_prev (any sampler grid) is exact too."""
  c, n = 2.0, 40000
  score_fn = GaussianMixture([1.0], [[c]], [[1e-10]]).score_fn(sde)
  for t_now, t_prev in ((0.9, 0.5), (0.3, 0.29), (0.05, 0.0)):
    t, tp = jnp.full((n,), t_now), jnp.full((n,), t_prev)
    (a, s), (a_p, s_p) = (tuple(float(v[0]) for v in sde.marginal_coefs(u[:1])) for u in (t, tp))
    k1, k2 = jax.random.split(jax.random.fold_in(key, int(t_now * 100)))
    x = a * c + s * jax.random.normal(k1, (n, 1))
    inv_alpha, v, std = sde.ancestral_step_coefs(t, tp)
    x_prev = inv_alpha[:, None] * (x + v[:, None] * score_fn(x, t)) + std[:, None] * jax.random.normal(k2, x.shape)
    assert abs(float(jnp.mean(x_prev)) - a_p * c) < 4 * s_p / np.sqrt(n) + 1e-5
    assert abs(float(jnp.std(x_prev)) - s_p) < 4 * s_p / np.sqrt(2 * n) + 1e-5


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_drift_and_diffusion(sde, probability_flow, key):
  x = jax.random.normal(key, (5, 3, 2))
  t = jnp.linspace(0.1, 0.9, 5)
  score_fn = lambda x, t: jnp.sin(x) + t[:, None, None]
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  drift, diffusion = rsde.sde(x, t)
  f, g = sde.sde(x, t)
  c = 0.5 if probability_flow else 1.0
  np.testing.assert_allclose(drift, f - c * g[:, None, None] ** 2 * score_fn(x, t), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(diffusion, 0.0 if probability_flow else g)
  rev_f, rev_G = rsde.discretize(x, t)
  fd, G = sde.discretize(x, t)
  np.testing.assert_allclose(rev_f, fd - c * G[:, None, None] ** 2 * score_fn(x, t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(rev_G, 0.0 if probability_flow else G)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_prior_sampling_and_logp(sde, key):
  z = sde.prior_sampling(key, (4000, 3, 2))
  assert z.shape == (4000, 3, 2)
  assert abs(float(jnp.std(z)) / sde.prior_std - 1) < 4 / np.sqrt(2 * z.size)
  expected = stats.norm(scale=sde.prior_std).logpdf(np.asarray(z[:7], np.float64)).reshape(7, -1).sum(1)
  np.testing.assert_allclose(sde.prior_logp(z[:7]), expected, rtol=1e-5)


@pytest.mark.parametrize("make, field", [
    (lambda: sde_lib.VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_min"),
    (lambda: sde_lib.VESDE(sigma_min=-0.1), "sigma_min"),
    (lambda: sde_lib.VESDE(sigma_min=0.0), "sigma_min"),
    (lambda: sde_lib.VESDE(N=0), "N"),
    (lambda: sde_lib.VESDE(N=2.5), "N"),
    (lambda: sde_lib.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min"),
    (lambda: sde_lib.VPSDE(beta_min=-1.0), "beta_min"),
    (lambda: sde_lib.VPSDE(beta_max=float("nan")), "beta_max"),
    (lambda: sde_lib.VPSDE(N=-3), "N"),
    (lambda: sde_lib.VPSDE(N=10), "N"),
    (lambda: sde_lib.subVPSDE(beta_min=0.0, beta_max=0.0), "beta_max"),
    (lambda: sde_lib.subVPSDE(beta_min=-0.5), "beta_min"),
])
def test_invalid_parameters_raise_naming_the_field(make, field):
  with pytest.raises(ValueError, match=field):
    make()


def test_get_sde_from_config():
  import ml_collections
  cfg = ml_collections.ConfigDict({"training": {"sde": "subvpsde"},
                                   "model": {"sigma_min": 0.01, "sigma_max": 50.0, "beta_min": 0.1,
                                             "beta_max": 20.0, "num_scales": 1000}})
  assert isinstance(sde_lib.get_sde(cfg), sde_lib.subVPSDE)
  cfg.training.sde = "VESDE"
  assert isinstance(sde_lib.get_sde(cfg), sde_lib.VESDE)
  cfg.training.sde = "edm"
  with pytest.raises(ValueError, match=r"training.sde must be one of \['cosine', 'rectified_flow', 'subvpsde', 'vesde', 'vpsde'\]"):
    sde_lib.get_sde(cfg)
