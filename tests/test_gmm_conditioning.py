"""Exact conditioning of the Gaussian-mixture oracle, checked against brute-force quadrature.

Every reference here is an independent computation: the joint density from scipy's multivariate
normals, multiplied by the likelihood and normalised by the trapezoidal rule on a fine grid (which
converges exponentially fast for Gaussians). Moments of the posterior are quadrature moments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import trapezoid

from data_lib import GaussianMixture
from tests.conftest import SDE_IDS, all_sdes

# Unequal weights, correlated and unequal covariances, overlapping modes (so every weight matters).
W2 = np.array([0.5, 0.3, 0.2])
MU2 = np.array([[-1.0, 0.5], [1.5, -1.0], [0.5, 2.0]])
COV2 = np.array([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 1.2]], [[0.3, 0.05], [0.05, 0.2]]])

W3 = np.array([0.25, 0.45, 0.3])
MU3 = np.array([[1.0, -1.5, 0.5], [-1.0, 1.0, 0.0], [0.5, 0.5, -1.5]])
COV3 = np.array([[[1.0, 0.5, 0.2], [0.5, 0.8, -0.3], [0.2, -0.3, 0.9]],
                 [[0.4, -0.1, 0.0], [-0.1, 1.3, 0.4], [0.0, 0.4, 0.6]],
                 [[0.7, 0.3, -0.25], [0.3, 0.5, 0.0], [-0.25, 0.0, 0.5]]])


def _component_pdfs(w, mu, cov, pts):
  """w_k N(pts; mu_k, cov_k) from scipy: [K, *pts.shape[:-1]]."""
  return np.stack([wk * stats.multivariate_normal(m, c).pdf(pts) for wk, m, c in zip(w, mu, cov)])


def _integrate(f, axes):
  """Trapezoidal integral of f [..., n_1, ..., n_U] over the trailing grid axes (1-D coordinate arrays)."""
  for ax in reversed(axes):
    f = trapezoid(f, ax, axis=-1)
  return f


def _posterior_by_quadrature(comp, axes, grid):
  """From unnormalised posterior component densities comp [K, *grid] on a grid (points grid [*grid, U]):
  the normalised density [*grid], per-component weights [K], means [K, U] and covariances [K, U, U]."""
  mass = _integrate(comp, axes)                                          # [K]
  z = mass.sum()
  means = np.stack([_integrate(comp * grid[..., i], axes) for i in range(grid.shape[-1])], 1) / mass[:, None]
  u = grid.shape[-1]
  d = grid[None] - means.reshape((-1,) + (1,) * u + (u,))                 # x - m_k: [K, *grid, U]
  covs = np.stack([np.stack([_integrate(comp * d[..., i] * d[..., j], axes) for j in range(u)], -1)
                   for i in range(u)], -2) / mass[:, None, None]
  return comp.sum(0) / z, mass / z, means, covs


def _mixture_moments(g):
  """Mean [D] and covariance [D, D] of a GaussianMixture from its parameters."""
  w, m, c = (np.asarray(v, np.float64) for v in (g.weights, g.means, g.covs))
  mean = w @ m
  second = np.einsum("k,kde->de", w, c + np.einsum("kd,ke->kde", m, m))
  return mean, second - np.outer(mean, mean)


def _density(g, pts):
  """exp(g.log_prob) at pts [..., D] in float64: [...]."""
  flat = jnp.asarray(pts.reshape(-1, pts.shape[-1]), jnp.float32)
  return np.exp(np.asarray(jax.jit(g.log_prob)(flat), np.float64)).reshape(pts.shape[:-1])


def _assert_posterior_matches(post, comp, axes, grid):
  """The mixture ``post`` against quadrature of comp [K, *grid]: density, weights, means, covariances, moments."""
  density, weights, means, covs = _posterior_by_quadrature(comp, axes, grid)
  np.testing.assert_allclose(_density(post, grid), density, atol=2e-5 * density.max())
  np.testing.assert_allclose(post.weights, weights, atol=2e-6)
  np.testing.assert_allclose(post.means, means, atol=2e-5)
  np.testing.assert_allclose(post.covs, covs, atol=2e-5)
  # the mixture's overall moments, as quadrature moments of the normalised density
  mean = np.stack([_integrate(density * grid[..., i], axes) for i in range(grid.shape[-1])])
  d = grid - mean
  cov = np.stack([[_integrate(density * d[..., i] * d[..., j], axes) for j in range(grid.shape[-1])]
                  for i in range(grid.shape[-1])])
  got_mean, got_cov = _mixture_moments(post)
  np.testing.assert_allclose(got_mean, mean, atol=2e-5)
  np.testing.assert_allclose(got_cov, cov, atol=2e-5)


# ---------------------------------------------------------------------------------- condition
def test_condition_2d_equals_the_normalised_slice():
  """p(x1 | x0 = c) = p(c, x1) / int p(c, x1) dx1, per component and in total."""
  g = GaussianMixture(W2, MU2, COV2)
  c = 0.3
  x1 = np.linspace(-10.0, 10.0, 4001)
  grid = x1[:, None]
  comp = _component_pdfs(W2, MU2, COV2, np.stack([np.full_like(x1, c), x1], 1))    # [K, n]
  post = g.condition([True, False], [c, np.nan])
  assert post.dim == 1 and post.num_components == 3
  # every weight moves away from the prior, so a missing Bayes update cannot pass
  assert np.min(np.abs(np.asarray(post.weights) - W2)) > 0.02
  _assert_posterior_matches(post, comp, [x1], grid)


@pytest.mark.parametrize("mask, values", [
    ([False, True, False], [np.nan, 0.4, np.nan]),         # observe 1 of 3: 2-D posterior
    ([1, 0, 1], [-0.6, np.nan, 0.7]),                      # observe 2 of 3, non-adjacent, 0/1 mask
    ([True, True, False], [0.5, -0.2, np.nan]),            # observe 2 of 3, the leading pair
])
def test_condition_3d_matches_quadrature_of_the_joint(mask, values):
  g = GaussianMixture(W3, MU3, COV3)
  m = np.asarray(mask, bool)
  u = np.flatnonzero(~m)
  n = 2001 if len(u) == 1 else 241
  axes = [np.linspace(-8.0, 8.0, n)] * len(u)
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)                           # [*grid, U]
  full = np.broadcast_to(np.where(m, np.nan_to_num(np.asarray(values, float)), 0.0), grid.shape[:-1] + (3,)).copy()
  full[..., u] = grid
  comp = _component_pdfs(W3, MU3, COV3, full)
  post = g.condition(mask, values)
  assert post.dim == len(u)
  _assert_posterior_matches(post, comp, axes, grid)


# ------------------------------------------------------------------------------------ observe
def test_observe_2d_matches_quadrature_of_prior_times_likelihood():
  """p(x | y) proportional to p(x) N(y; A x, s^2), A = [1, 1] / sqrt 2, s = 0.3, on a 2-D grid."""
  g = GaussianMixture(W2, MU2, COV2)
  a_mat, y, s = np.array([[1.0, 1.0]]) / np.sqrt(2), np.array([0.6]), 0.3
  axes = [np.linspace(-8.0, 8.0, 401)] * 2
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
  lik = stats.norm(grid @ a_mat[0], s).pdf(y[0])
  comp = _component_pdfs(W2, MU2, COV2, grid) * lik
  post = g.observe(a_mat, y, s)
  assert post.dim == 2 and post.num_components == 3
  assert np.min(np.abs(np.asarray(post.weights) - W2)) > 0.02
  _assert_posterior_matches(post, comp, axes, grid)


def test_observe_with_small_noise_approaches_condition():
  """Observing R x_o (R invertible 2x2, tiny noise) is observing x_o = R^{-1} y: the marginal of the
  unobserved coordinate must match ``condition``. Exercises M = 2 and a non-selector A."""
  g = GaussianMixture(W3, MU3, COV3)
  mask = np.array([True, False, True])
  x_o = np.array([-0.6, 0.7])
  r = np.array([[2.0, 1.0], [-0.5, 1.5]])
  a_mat = r @ np.eye(3)[mask]
  post = g.observe(a_mat, r @ x_o, 1e-5)
  cond = g.condition(mask, np.array([x_o[0], np.nan, x_o[1]]))
  np.testing.assert_allclose(post.weights, cond.weights, atol=1e-6)
  np.testing.assert_allclose(post.means[:, 1], cond.means[:, 0], atol=1e-5)
  np.testing.assert_allclose(post.covs[:, 1, 1], cond.covs[:, 0, 0], atol=1e-5)
  np.testing.assert_allclose(post.means[:, mask], np.broadcast_to(x_o, (3, 2)), atol=1e-5)


# ----------------------------------------------------------------------- restrict and classes
def test_restrict_is_the_renormalised_sub_mixture(key):
  g = GaussianMixture(W3, MU3, COV3)
  x = np.asarray(jax.random.normal(key, (200, 3)), np.float64) * 2
  comps = [2, 0]
  r = g.restrict(comps)
  expected = np.log(_component_pdfs(W3[comps], MU3[comps], COV3[comps], x).sum(0) / W3[comps].sum())
  np.testing.assert_allclose(jax.jit(r.log_prob)(jnp.asarray(x, jnp.float32)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(r.means, MU3[comps], atol=1e-7)                       # listed order
  np.testing.assert_allclose(r.weights, W3[comps] / W3[comps].sum(), atol=1e-7)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_class_log_likelihood_t_is_bayes_rule(sde, key):
  """log p_t(c | x) = log p_t(x | c) + log p(c) - log p_t(x), with p_t(x | c) the restricted mixture."""
  g = GaussianMixture(W3, MU3, COV3)
  k1, k2 = jax.random.split(key)
  x = jax.random.normal(k1, (32, 3)) * 2
  t = jax.random.uniform(k2, (32,), minval=0.01, maxval=1.0)
  comps = [0, 2]
  r = g.restrict(comps)

  @jax.jit
  def evaluate(x, t):
    by_hand = r.log_prob_t(x, t, sde) + np.log(W3[comps].sum()) - g.log_prob_t(x, t, sde)
    return by_hand, g.class_log_likelihood_t(x, t, sde, comps), g.class_log_likelihood_t(x, t, sde, [1])

  by_hand, got, other = evaluate(x, t)
  assert got.shape == (32,)
  np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-4)
  # the classes {0, 2} and {1} partition the components: their posteriors sum to one
  np.testing.assert_allclose(jnp.exp(got) + jnp.exp(other), 1.0, atol=1e-5)


def test_class_log_likelihood_gradient(key):
  """jax.grad of log p(c | x) is score of p(x | c) - score of p(x), and central finite differences
  agree, at the (a(t), s(t)) of every SDE (one row per SDE and time, all in one batch)."""
  g = GaussianMixture(W3, MU3, COV3)
  k1, k2 = jax.random.split(key)
  n = 8
  x = jax.random.normal(k1, (3 * n, 3))
  t = jax.random.uniform(k2, (n,), minval=0.05, maxval=0.5)
  a, s = (jnp.concatenate(v) for v in zip(*(sde.marginal_coefs(t) for sde in all_sdes()[:3])))    # [3 n]
  comps = [1, 2]
  r = g.restrict(comps)
  h = 1e-2

  @jax.jit
  def evaluate(x, a, s):
    # rows are independent, so the gradient of the sum is the per-row gradient
    grad = jax.grad(lambda x: g.class_log_likelihood(x, a, s, comps).sum())(x)
    exact = r.score_perturbed(x, a, s) - g.score_perturbed(x, a, s)
    steps = jnp.concatenate([jnp.eye(3), -jnp.eye(3)]) * h                     # [6, 3]
    shifted = (x[None] + steps[:, None]).reshape(-1, 3)                         # [6 m, 3]
    values = g.class_log_likelihood(shifted, jnp.tile(a, 6), jnp.tile(s, 6), comps).reshape(6, -1)
    fd = ((values[:3] - values[3:]) / (2 * h)).T                                # central differences: [m, 3]
    return grad, exact, fd

  grad, exact, fd = evaluate(x, a, s)
  np.testing.assert_allclose(grad, exact, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-3)
  assert int(jnp.sum(jnp.max(jnp.abs(grad), axis=1) > 0.1)) >= n                # mostly far from a trivial zero


def test_class_log_likelihood_partition_sums_to_one(key):
  g = GaussianMixture(W3, MU3, COV3)
  x = jax.random.normal(key, (32, 3)) * 3
  total = jax.jit(lambda x, a, s: sum(jnp.exp(g.class_log_likelihood(x, a, s, c)) for c in ([1], [2], [0])))
  for a, s in [(1.0, 0.0), (0.7, 0.5), (0.1, 1.0)]:
    np.testing.assert_allclose(total(x, a, s), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda g: g.condition(np.ones((3, 1), bool), [0.0, 0.0, 0.0]), "^mask"),
    (lambda g: g.condition([True, False, True, False], [0.0, 0.0, 0.0]), "^mask"),
    (lambda g: g.condition([True, True, True], [0.0, 0.0, 0.0]), "^mask"),
    (lambda g: g.condition([0, 0, 0], [0.0, 0.0, 0.0]), "^mask"),
    (lambda g: g.condition([0, 2, 1], [0.0, 0.0, 0.0]), "^mask"),
    (lambda g: g.condition([True, False, False], [0.0, 0.0]), "^values"),
    (lambda g: g.condition([True, False, False], [np.nan, 0.0, 0.0]), "^values"),
    (lambda g: g.observe(np.ones((1, 2)), [0.0], 0.1), "^A"),
    (lambda g: g.observe(np.ones(3), [0.0], 0.1), "^A"),
    (lambda g: g.observe(np.ones((2, 3)), [0.0], 0.1), "^y"),
    (lambda g: g.observe(np.ones((1, 3)), [0.0], -0.1), "^noise_std"),
    (lambda g: g.observe(np.ones((1, 3)), [0.0], [0.1, 0.2]), "^noise_std"),
    (lambda g: g.observe(np.ones((1, 3)), [0.0], 0.0), "^noise_std = 0.*condition"),
    (lambda g: g.restrict([]), "^components"),
    (lambda g: g.restrict([0, 3]), "^components"),
    (lambda g: g.restrict([-1]), "^components"),
    (lambda g: g.restrict([1, 1]), "^components"),
    (lambda g: g.restrict([0.5]), "^components"),
    (lambda g: g.class_log_likelihood(jnp.zeros((2, 3)), 1.0, 0.1, [4]), "^components"),
])
def test_bad_arguments_raise_value_error_naming_them(call, match):
  with pytest.raises(ValueError, match=match):
    call(GaussianMixture(W3, MU3, COV3))
