"""GaussianMixture.posterior (noise_std >= 0) and testkit.posterior_metrics.

References are independent of the Kalman-gain algebra under test: self-normalised importance sampling
from the prior with the likelihood as weight (noise_std > 0), ``condition`` (noise_std = 0 on
coordinates), and Monte Carlo moments of ``sample``. Every statistical threshold is 5 standard errors
estimated from the same samples, never tuned.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats

from data_lib import GaussianMixture, example_mixture
from data_lib.gmm import MixturePosterior
from testkit.posterior_metrics import posterior_floor, posterior_metrics

# Overlapping modes with unequal, correlated covariances, so every weight and cross term matters.
W3 = np.array([0.25, 0.45, 0.3])
MU3 = np.array([[1.0, -1.5, 0.5], [-1.0, 1.0, 0.0], [0.5, 0.5, -1.5]])
COV3 = np.array([[[1.0, 0.5, 0.2], [0.5, 0.8, -0.3], [0.2, -0.3, 0.9]],
                 [[0.4, -0.1, 0.0], [-0.1, 1.3, 0.4], [0.0, 0.4, 0.6]],
                 [[0.7, 0.3, -0.25], [0.3, 0.5, 0.0], [-0.25, 0.0, 0.5]]])
A23 = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])         # a non-selector observation, M = 2
Y2 = np.array([[0.4, -0.9], [-1.2, 0.6]])                     # a batch of two observations
R2 = np.array([[2.0, 1.0], [-0.5, 1.5]])                       # invertible mixing of observed coordinates


def _g3():
  return GaussianMixture(W3, MU3, COV3)


def _snis(f, wn):
  """Self-normalised IS estimate sum_i wn_i f_i and its delta-method standard error
  sqrt(sum_i wn_i^2 (f_i - estimate)^2) (Owen, Monte Carlo theory, methods and examples, ch. 9).
  f [n, ...], wn [n] normalised weights."""
  est = np.tensordot(wn, f, axes=1)
  return est, np.sqrt(np.tensordot(wn**2, (f - est) ** 2, axes=1))


def _close(est, se, exact, what):
  z = np.abs(est - exact) / np.maximum(se, 1e-300)
  assert np.all(z < 5), f"{what}: {np.max(z):.2f} standard errors off"


# ----------------------------------------------------------------------------- noise_std > 0
@pytest.mark.parametrize("row", [0, 1])
def test_posterior_matches_importance_sampling_from_the_prior(row):
  """Weights, per-component means and covariances against SNIS with 200k prior draws (weight = likelihood)."""
  noise = 0.6
  post = _g3().posterior(A23, Y2, noise)[row]
  rng = np.random.default_rng(row)
  n = 200_000
  comp = rng.choice(3, n, p=W3)
  x = MU3[comp] + np.einsum("nde,ne->nd", np.linalg.cholesky(COV3)[comp], rng.standard_normal((n, 3)))
  log_lik = -0.5 * np.sum((Y2[row] - x @ A23.T) ** 2, axis=1) / noise**2
  wn = np.exp(log_lik - log_lik.max())
  wn /= wn.sum()
  assert 1 / np.sum(wn**2) > 10_000                             # effective sample size
  onehot = np.eye(3)[comp]
  est, se = _snis(onehot, wn)
  _close(est, se, post.weights, "weights")
  assert np.max(np.abs(post.weights - W3) / se) > 50              # the Bayes update is far above the noise
  for k in range(3):
    wk = wn * onehot[:, k] / est[k]                               # the posterior restricted to component k
    _close(*_snis(x, wk), post.means[k], f"mean {k}")
    d = x - post.means[k]
    _close(*_snis(np.einsum("nd,ne->nde", d, d), wk), post.covs[k], f"cov {k}")


def test_posterior_equals_observe_and_batches():
  g = _g3()
  batch = g.posterior(A23, Y2, 0.3)
  assert isinstance(batch, list) and len(batch) == 2
  for y, post in zip(Y2, batch):
    single, obs = g.posterior(A23, y, 0.3), g.observe(A23, y, 0.3)
    assert isinstance(single, MixturePosterior)
    for name in ("weights", "means", "covs"):
      np.testing.assert_allclose(getattr(post, name), getattr(single, name), rtol=0, atol=1e-14)
    np.testing.assert_allclose(post.weights, obs._weights64, rtol=0, atol=1e-14)
    np.testing.assert_allclose(post.means, obs._means64, rtol=0, atol=1e-14)
    np.testing.assert_allclose(post.covs, obs._covs64, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- noise_std = 0
@pytest.mark.parametrize("mask, values, mix", [
    ([False, True, False], [0.4], False),
    ([True, False, True], [-0.6, 0.7], False),
    ([True, False, True], [-0.6, 0.7], True),       # A = R E_mask: observes R x_o, pins x_o = R^{-1} y
    ([True, True, False], [0.0, 1.3], False),
])
def test_noiseless_posterior_equals_condition(mask, values, mix, key):
  g = _g3()
  m = np.asarray(mask)
  x_o = np.asarray(values)
  a_mat = np.eye(3)[m]
  if mix:
    a_mat = R2 @ a_mat
  post = g.posterior(a_mat, a_mat[:, m] @ x_o, 0.0)
  full = np.zeros(3)
  full[m] = x_o
  cond = g.condition(m, full)
  u = ~m
  np.testing.assert_allclose(post.weights, cond._weights64, rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(post.means[:, u], cond._means64, rtol=0, atol=1e-12)
  np.testing.assert_allclose(post.covs[:, u][:, :, u], cond._covs64, rtol=0, atol=1e-12)
  np.testing.assert_allclose(post.means[:, m], np.broadcast_to(x_o, (3, m.sum())), rtol=0, atol=1e-12)
  np.testing.assert_allclose(post.covs[:, m], 0.0, atol=1e-12)     # pinned rows (and so columns)
  x = np.asarray(post.sample(key, 10_000))
  if mix:
    np.testing.assert_allclose(x[:, m], np.broadcast_to(x_o, (10_000, m.sum())), rtol=0, atol=1e-6)
  else:
    assert np.array_equal(x[:, m], np.broadcast_to(np.float32(x_o), (10_000, m.sum())))   # exactly y
  assert np.all(post.std()[m] < 1e-7) and np.all(post.std()[u] > 0.1)


def test_noiseless_posterior_is_the_limit_of_small_noise():
  g = _g3()
  exact, noisy = g.posterior(A23, Y2, 0.0), g.posterior(A23, Y2, 1e-4)
  for p0, p1 in zip(exact, noisy):
    for name in ("weights", "means", "covs"):
      np.testing.assert_allclose(getattr(p1, name), getattr(p0, name), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ sample
@pytest.mark.parametrize("noise", [0.3, 0.0])
def test_sample_has_the_closed_form_moments(noise, key):
  post = _g3().posterior(A23[:1], Y2[0, :1], noise)
  n = 200_000
  x, comp = post.sample_with_components(key, n)
  assert x.shape == (n, 3) and x.dtype == np.float32 and comp.shape == (n,)
  x, comp = np.asarray(x, np.float64), np.asarray(comp)
  freq = np.bincount(comp, minlength=3) / n
  _close(freq, np.sqrt(post.weights * (1 - post.weights) / n), post.weights, "component frequencies")
  mean, cov = post.mean(), post.cov()
  _close(x.mean(0), x.std(0) / np.sqrt(n), mean, "mean")
  f = np.einsum("nd,ne->nde", x - mean, x - mean)
  _close(f.mean(0), f.std(0) / np.sqrt(n), cov, "covariance")
  np.testing.assert_allclose(post.std(), np.sqrt(np.diag(cov)), rtol=1e-12)
  for k in range(3):
    xk = x[comp == k]
    _close(xk.mean(0), xk.std(0) / np.sqrt(len(xk)), post.means[k], f"mean {k}")
  if noise == 0:
    np.testing.assert_allclose(x @ A23[0], Y2[0, 0], rtol=0, atol=1e-5)    # A x = y, to float32


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("args, match", [
    ((np.ones((1, 2)), [0.0], 0.1), "^A"),
    ((np.ones(3), [0.0], 0.1), "^A"),
    ((np.full((1, 3), np.inf), [0.0], 0.1), "^A"),
    ((np.ones((2, 3)), [0.0], 0.1), "^y"),
    ((np.ones((2, 3)), np.zeros((2, 3)), 0.1), "^y"),
    ((np.ones((2, 3)), np.zeros((1, 2, 2)), 0.1), "^y"),
    ((np.ones((1, 3)), [np.nan], 0.1), "^y"),
    ((np.ones((1, 3)), [0.0], -0.1), "^noise_std"),
    ((np.ones((1, 3)), [0.0], [0.1, 0.2]), "^noise_std"),
    ((np.ones((1, 3)), [0.0], np.nan), "^noise_std"),
    ((np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]), [0.0, 0.0], 0.0), "^A must have full row rank.*noise_std"),
    ((np.ones((4, 3)), np.zeros(4), 0.0), "^A must have full row rank"),
])
def test_bad_arguments_raise_one_line_value_errors(args, match):
  with pytest.raises(ValueError, match=match) as err:
    _g3().posterior(*args)
  assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- posterior_metrics
N = 1000


@pytest.fixture(scope="module")
def setup():
  """example_mixture(8) observed without noise along (x0 + x1) / sqrt 2 and at x2: two posterior modes
  (0.8 / 0.2), coordinate 2 pinned, plus the noise floor of n = 1000 samples."""
  prior = example_mixture(8)
  a_mat = np.zeros((2, 8))
  a_mat[0, :2] = 1 / np.sqrt(2)
  a_mat[1, 2] = 1.0
  post = prior.posterior(a_mat, [0.0, 0.3], 0.0)
  assert np.sum(post.weights > 0.1) == 2
  return prior, post, posterior_floor(post, prior, N, jax.random.key(1))


def test_exact_samples_stay_under_the_floor(setup):
  """Each metric of a fresh exact sample exceeds its 99% floor with probability ~0.01; allowing 0.02 for
  the floor's own estimation noise (200 repeats), more than c of 20 exceed with probability < 1e-3."""
  prior, post, floor = setup
  draws = 20
  c = int(stats.binom.ppf(1 - 1e-3, draws, 0.02))
  assert c == 3
  exceed = dict.fromkeys(floor, 0)
  for k in jax.random.split(jax.random.key(2), draws):
    metrics = posterior_metrics(post.sample(k, N), post, prior)
    assert set(metrics) == set(floor) | {"coverage90"}
    assert abs(metrics["coverage90"] - 0.9) == pytest.approx(metrics["coverage_error"])
    for name in floor:
      exceed[name] += metrics[name] > floor[name]
  assert max(exceed.values()) <= c, exceed
  assert all(0 < v < 0.2 for v in floor.values()), floor


def _wrong(post: MixturePosterior, how: str) -> MixturePosterior:
  if how == "mode dropped":
    keep = np.arange(len(post.weights)) != np.argmax(post.weights)
    return MixturePosterior(post.weights[keep] / post.weights[keep].sum(), post.means[keep], post.covs[keep])
  if how == "spread x1.5":
    return MixturePosterior(post.weights, post.means, post.covs * 1.5**2)
  shift = 0.5 * post.std() * (post.std() > 1e-6)
  return MixturePosterior(post.weights, post.means + shift, post.covs)     # "shifted half a std"


@pytest.mark.parametrize("how, caught", [
    ("prior", ["tv"]),
    ("mode dropped", ["tv"]),
    ("spread x1.5", ["spread_error", "coverage_error"]),
    ("shifted half a std", ["mean_error", "coverage_error"]),
])
def test_wrong_samplers_exceed_the_floor(setup, how, caught, key):
  prior, post, floor = setup
  x = prior.sample(key, N) if how == "prior" else _wrong(post, how).sample(key, N)
  metrics = posterior_metrics(x, post, prior)
  for name in caught:
    assert metrics[name] > 3 * floor[name], (name, metrics[name], floor[name])


def test_metrics_of_broken_samples(setup):
  prior, post, _ = setup
  x = np.array(post.sample(jax.random.key(3), N))
  x[5, 4] = np.nan
  metrics = posterior_metrics(x, post, prior)
  assert all(metrics[name] == np.inf for name in ("tv", "mean_error", "spread_error", "coverage_error"))
  with pytest.raises(ValueError, match="^x must have shape"):
    posterior_metrics(x[:, :3], post, prior)
