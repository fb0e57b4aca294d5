"""Probability-flow likelihoods against the oracle's exact perturbed log-densities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from data_lib import GaussianMixture, example_mixture
from tests.conftest import SDE_IDS, all_sdes

EPS = 1e-5


def _split_errors(sde, mixture, x, logp, z):
  """(solver error, prior mismatch) in nats/dim, averaged over the batch.

  logp = prior_logp(z) + int div. The exact identity is log p_eps(x) = log p_T(z) + int div, so
  logp - prior_logp(z) + log p_T(z) - log p_eps(x) is solver error alone, and
  log p_T(z) - prior_logp(z) is the prior mismatch (p_T is not exactly the prior).
  """
  d = x.shape[1]
  t_T = jnp.full(x.shape[:1], sde.T)
  log_pT = mixture.log_prob_t(z, t_T, sde)
  exact = mixture.log_prob_t(x, jnp.full(x.shape[:1], EPS), sde)
  solver = np.asarray(logp - sde.prior_logp(z) + log_pT - exact, np.float64)
  mismatch = np.asarray(log_pT - sde.prior_logp(z), np.float64)
  return float(np.mean(np.abs(solver))) / d, float(np.mean(mismatch)) / d


@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_exact_divergence_likelihood_matches_the_oracle(sde, dim, key):
  mixture = example_mixture(dim)
  x = mixture.sample(key, 64)
  likelihood_fn = samplers.get_likelihood_fn(sde, rtol=1e-5, atol=1e-5, t_min=EPS, divergence="exact")
  logp, z, nfe = jax.jit(likelihood_fn, static_argnums=1)(key, mixture.score_fn(sde), x)
  solver_err, mismatch = _split_errors(sde, mixture, x, logp, z)
  print(f"{sde}: D={dim} solver error {solver_err:.2e} nats/dim, prior mismatch {mismatch:.2e} nats/dim, nfe {int(nfe)}")
  assert solver_err <= 1e-4
  assert int(nfe) > 0


def test_prior_mismatch_is_not_solver_error_on_ve(key):
  """On the 2-D mixture under VE the prior mismatch exceeds the solver error (issue 5)."""
  sde = all_sdes()[0]
  mixture = example_mixture(2)
  x = mixture.sample(key, 64)
  likelihood_fn = samplers.get_likelihood_fn(sde, t_min=EPS, divergence="exact")
  logp, z, _ = jax.jit(likelihood_fn, static_argnums=1)(key, mixture.score_fn(sde), x)
  solver_err, mismatch = _split_errors(sde, mixture, x, logp, z)
  assert abs(mismatch) > 3 * solver_err


@pytest.mark.parametrize("divergence", ["hutchinson_rademacher", "hutchinson_gaussian"])
def test_hutchinson_is_unbiased(divergence, key):
  sde = all_sdes()[1]
  mixture = example_mixture(2)
  x = mixture.sample(key, 8)
  score_fn = mixture.score_fn(sde)
  exact = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS, divergence="exact"), static_argnums=1)(key, score_fn, x)[0]
  # A single probe, over 64 keys: the mean is within 3 standard errors of the exact value.
  one = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS, divergence=divergence), static_argnums=1)
  draws = np.stack([np.asarray(one(jax.random.key(k), score_fn, x)[0]) for k in range(64)])
  mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(64)
  assert np.all(np.abs(mean - exact) <= 3 * se + 1e-4), (mean - exact, se)
  assert np.all(se > 0)                                   # it is an estimate, not the exact value
  # 64 probes in one call: within 3 standard errors (the single-probe spread / 8) of the exact value.
  many = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS, divergence=divergence, n_probes=64), static_argnums=1)
  logp64 = np.asarray(many(jax.random.key(99), score_fn, x)[0])
  assert np.all(np.abs(logp64 - exact) <= 3 * draws.std(0, ddof=1) / 8 + 1e-4)


@pytest.mark.slow
def test_deterministic_and_per_sample_mode(key):
  sde = all_sdes()[2]
  mixture = example_mixture(2)
  x = mixture.sample(key, 6)
  score_fn = mixture.score_fn(sde)
  batched = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS), static_argnums=1)
  a, b = batched(key, score_fn, x), batched(key, score_fn, x)
  np.testing.assert_array_equal(a[0], b[0])
  per_sample = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS, per_sample=True), static_argnums=1)
  logp, z, nfe = per_sample(key, score_fn, x)
  assert nfe.shape == (6,) and np.all(np.asarray(nfe) > 0)
  np.testing.assert_allclose(logp, a[0], atol=2e-3)
  # Per-sample results do not depend on the batch-mates.
  logp_half = per_sample(key, score_fn, x[:3])[0]
  np.testing.assert_allclose(logp_half, logp[:3], rtol=1e-6, atol=1e-5)


def test_bits_per_dim_of_known_densities():
  # A uniform model on [0, 1)^D (or [-1, 1)^D) codes 8-bit data at exactly 8 bits/dim.
  d = 10
  np.testing.assert_allclose(samplers.bits_per_dim(jnp.zeros(3), d), 8.0)
  np.testing.assert_allclose(samplers.bits_per_dim(jnp.full(3, -d * math.log(2)), d, data_range=(-1, 1)), 8.0)
  # A Gaussian N(mu, s^2) per dimension on dequantised pixels: E_u[-log N((k + u)/256)] in closed form.
  mu, s, k = 0.4, 0.2, jnp.arange(0, 256, 5)
  pixels = jnp.tile(k, (4000, 1))
  y = samplers.dequantize(jax.random.key(3), pixels)
  logp = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * s**2) - 0.5 * (y - mu) ** 2 / s**2, axis=1)
  bpd = float(jnp.mean(samplers.bits_per_dim(logp, k.size)))
  c = (np.asarray(k) + 0.5) / 256
  nats = 0.5 * np.log(2 * np.pi * s**2) + ((c - mu) ** 2 + 1 / (12 * 256**2)) / (2 * s**2)
  np.testing.assert_allclose(bpd, nats.mean() / np.log(2) + 8, rtol=2e-4)


@pytest.mark.slow
def test_bits_per_dim_is_invariant_to_the_data_range(key):
  """Data on [0, 1] with its model, and the same data on [-1, 1] with the rescaled model, give the
  same bits/dim end to end through the probability-flow likelihood.

  The two are different diffusion problems (the SDE's noise does not rescale with the data), so
  p_T misses the prior by a different amount in each; that mismatch is removed with the oracle's
  exact log p_T(z), leaving the change of units the helper must handle.
  """
  sde = all_sdes()[1]
  d, n = 4, 32
  means, covs = np.array([[0.3] * d, [0.7] * d]), np.array([np.full(d, 0.01), np.full(d, 0.02)])
  on_unit = GaussianMixture([0.4, 0.6], means, covs)
  on_centred = GaussianMixture([0.4, 0.6], 2 * means - 1, 4 * covs)          # x = 2y - 1
  y = samplers.dequantize(key, jax.random.randint(key, (n, d), 0, 256))
  fn = jax.jit(samplers.get_likelihood_fn(sde, t_min=EPS, divergence="exact"), static_argnums=1)

  def logp_without_prior_mismatch(mixture, x):
    logp, z, _ = fn(key, mixture.score_fn(sde), x)
    return logp - sde.prior_logp(z) + mixture.log_prob_t(z, jnp.full(n, sde.T), sde)

  bpd_unit = samplers.bits_per_dim(logp_without_prior_mismatch(on_unit, y), d)
  bpd_centred = samplers.bits_per_dim(logp_without_prior_mismatch(on_centred, 2 * y - 1), d, data_range=(-1, 1))
  np.testing.assert_allclose(bpd_unit, bpd_centred, atol=1e-3)
  # ... and both equal the exact values from the oracle's densities (to the solver's tolerance).
  exact = samplers.bits_per_dim(on_unit.log_prob_t(y, jnp.full(n, EPS), sde), d)
  np.testing.assert_allclose(bpd_unit, exact, atol=1e-3)
  # Forgetting the Jacobian of the rescaling would be off by exactly one bit per dimension.
  wrong = samplers.bits_per_dim(logp_without_prior_mismatch(on_centred, 2 * y - 1), d)
  np.testing.assert_allclose(wrong - bpd_unit, 1.0, atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(divergence="skilling"), "divergence must be one of"),
    (dict(n_probes=0), "n_probes must be"),
    (dict(rtol=-1.0), "rtol must be"),
    (dict(solver="euler"), "has no error estimate"),
    (dict(t_min=2.0), "t_min must lie"), (dict(eps=2.0), "t_min must lie"),
])
def test_bad_likelihood_options_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    samplers.get_likelihood_fn(all_sdes()[0], **kwargs)


def test_data_without_batch_axis_raises(key):
  sde = all_sdes()[0]
  fn = samplers.get_likelihood_fn(sde)
  with pytest.raises(ValueError, match=r"x must be \[batch, \*data_dims\]"):
    fn(key, example_mixture(2).score_fn(sde), jnp.zeros(2))


def test_bits_per_dim_rejects_an_empty_range():
  with pytest.raises(ValueError, match="data_range"):
    samplers.bits_per_dim(jnp.zeros(2), 3, data_range=(1.0, -1.0))
