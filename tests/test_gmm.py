"""The Gaussian-mixture oracle: exact densities, exact scores, exact perturbed samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import sde_lib
from data_lib import GaussianMixture, example_mixture
from tests.conftest import SDE_IDS, all_sdes


def _mixture3d():
  covs = np.array([[[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]], np.diag([0.2, 1.5, 0.4])])
  return GaussianMixture([0.3, 0.7], [[1.0, -2.0, 0.5], [-1.0, 1.0, 0.0]], covs)


@pytest.mark.parametrize("a, s", [(1.0, 0.0), (0.6, 0.8), (1.0, 3.0), (0.01, 1.0)])
def test_log_prob_perturbed_equals_scipy(a, s, key):
  g = _mixture3d()
  x = jax.random.normal(key, (10, 3)) * 2
  expected = special.logsumexp(
      [np.log(w) + stats.multivariate_normal(a * np.asarray(m), a**2 * np.asarray(c) + s**2 * np.eye(3)).logpdf(x)
       for w, m, c in zip(g.weights, g.means, g.covs)], axis=0)
  np.testing.assert_allclose(g.log_prob_perturbed(x, a, s), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_score_is_gradient_of_log_prob(sde, key):
  g = _mixture3d()
  x = jax.random.normal(key, (16, 3)) * 2
  t = jnp.linspace(0.01, 1.0, 16)
  autodiff = jax.vmap(jax.grad(lambda xi, ti: g.log_prob_t(xi[None], ti[None], sde)[0]))(x, t)
  np.testing.assert_allclose(g.score_t(x, t, sde), autodiff, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g.score_fn(sde)(x, t), autodiff, rtol=1e-4, atol=1e-4)


def test_samples_have_the_mixture_moments(key):
  g = _mixture3d()
  n = 200000
  x, comp = g.sample_with_components(key, n)
  w = np.asarray(g.weights)
  counts = np.bincount(np.asarray(comp), minlength=2) / n
  assert np.all(np.abs(counts - w) < 4 * np.sqrt(w * (1 - w) / n))
  mean = np.sum(w[:, None] * np.asarray(g.means), 0)
  assert np.all(np.abs(np.asarray(x.mean(0)) - mean) < 4 * np.asarray(x.std(0)) / np.sqrt(n))
  for k in range(2):
    emp = np.cov(np.asarray(x[comp == k]).T)
    np.testing.assert_allclose(emp, g.covs[k], atol=0.03)


def _forward_em(sde, key, x0, t_end, n_steps=1000):
  dt = t_end / n_steps

  def step(x, inp):
    i, k = inp
    drift, gdiff = sde.sde(x, jnp.full(x.shape[:1], i * dt))
    return x + drift * dt + gdiff[:, None] * jnp.sqrt(dt) * jax.random.normal(k, x.shape), None

  return jax.lax.scan(step, x0, (jnp.arange(n_steps), jax.random.split(key, n_steps)))[0]


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("t", [0.05, 0.3])
@pytest.mark.slow
def test_perturbed_samples_match_the_forward_sde(sde, t, key):
  """Two-sample Kolmogorov-Smirnov tests on fixed projections, Bonferroni over 3 projections."""
  g = example_mixture(2)
  n = 20000
  k1, k2, k3 = jax.random.split(key, 3)
  x0 = g.sample(k1, n)
  if isinstance(sde, sde_lib.VESDE):
    x0 = x0 + sde.sigma_min * jax.random.normal(k3, x0.shape)   # the VE kernel's t = 0 noise
  simulated = np.asarray(_forward_em(sde, k2, x0, t))
  exact = np.asarray(g.sample_t(jax.random.fold_in(key, 7), n, t, sde))
  for direction in ([1.0, 0.0], [0.0, 1.0], [0.6, 0.8]):
    p = stats.ks_2samp(simulated @ direction, exact @ direction).pvalue
    assert p > 0.01 / 3, (direction, p)


def test_invalid_mixtures_raise():
  with pytest.raises(ValueError, match="weights"):
    GaussianMixture([0.5, 0.6], [[0.0], [1.0]])
  with pytest.raises(ValueError, match="means"):
    GaussianMixture([1.0], [0.0, 1.0])
  with pytest.raises(ValueError, match="positive definite"):
    GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
  with pytest.raises(ValueError, match="covs must be"):
    GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]])
