"""Flow matching inside the SDE view: the velocity parameterisation, the conditional flow-matching loss as a
weighted denoising score-matching loss, and the sampling noise chosen after training (issue 25)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import samplers
import sde_lib
from sde_lib import parameterization as param
from tests.conftest import ORACLE_SAMPLES, SDE_IDS, all_sdes

SDES = all_sdes() + [sde_lib.CosineSDE()]
IDS = SDE_IDS + ["cosine"]
N_SAMPLES = ORACLE_SAMPLES
TOLERANCE = 1.5


def _exact_velocity(sde, c):
  """For a point mass at c: v(x, t) = a' c + s' (x - a c) / s (the conditional velocity is the marginal one)."""
  def v(x, t):
    a, s, da, ds = (sde_lib.batch_broadcast(u, x) for u in sde.marginal_rates(t))
    return da * c + ds * (x - a * c) / s
  return v


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_velocity_conversions_are_exact_for_a_point_mass(sde):
  """score_from_velocity of the exact velocity is the exact score -(x - a c) / s^2, and back again; at the
  held end of a schedule the conversion stays finite."""
  c = 0.7
  t = jnp.array([0.02, 0.3, 0.7, 0.95, float(sde.t_end), float(sde.T)])
  x = jax.random.normal(jax.random.key(0), (6, 3)) + 0.5
  a, s = (sde_lib.batch_broadcast(u, x) for u in sde.marginal_coefs(t))
  score = -(x - a * c) / jnp.square(s)
  v = _exact_velocity(sde, c)(x, t)
  np.testing.assert_allclose(param.score_from_velocity(sde, x, t, v), score, rtol=2e-4, atol=1e-4)
  np.testing.assert_allclose(param.velocity_from_score(sde, x, t, score), v, rtol=2e-3, atol=2e-3)
  np.testing.assert_allclose(param.denoised_from_score(sde, x, t, score), jnp.full_like(x, c), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_flow_matching_loss_is_velocity_weighted_score_matching(sde):
  """With the same draws (t, z), mean |v_theta(x_t, t) - (a' x0 + s' z)|^2 over the data dimensions equals the
  DSM loss with weighting="velocity" (reduce_mean) of the score the velocity network defines."""
  w = jax.random.normal(jax.random.key(1), (3, 3))
  v_theta = lambda x, t: jnp.tanh(x @ w) + t[:, None] * x            # any network
  score_fn = lambda x, t: param.score_from_velocity(sde, x, t, v_theta(x, t))
  x0 = jax.random.normal(jax.random.key(2), (64, 3))
  key = jax.random.key(3)
  dsm = sde_lib.get_per_example_loss_fn(sde, weighting="velocity", reduce_mean=True, t_min=1e-3)(key, score_fn, x0)
  p = sde_lib.perturb(key, sde, x0, t_min=1e-3)
  _, _, da, ds = (sde_lib.batch_broadcast(u, x0) for u in sde.marginal_rates(p.t))
  cfm = jnp.mean(jnp.square(v_theta(p.x_t, p.t) - (da * x0 + ds * p.z)), axis=1)
  np.testing.assert_allclose(dsm, cfm, rtol=2e-3, atol=1e-5)


def test_velocity_parameterization_gives_the_exact_score():
  """models.get_score_fn(parameterization="velocity") turns a network predicting the exact velocity into the
  exact score (rectified flow, point mass)."""
  sde, c = sde_lib.RectifiedFlow(), -0.4
  exact = _exact_velocity(sde, c)
  apply_fn = lambda params, x, labels, train, rngs: exact(x, labels / models.score.VP_CONTINUOUS_LABEL_SCALE)
  score_fn = models.get_score_fn(sde, apply_fn, None, parameterization="velocity")
  x, t = jnp.linspace(-2, 2, 8)[:, None], jnp.linspace(0.05, 0.99, 8)
  a, s = sde.marginal_coefs(t)
  np.testing.assert_allclose(score_fn(x, t), -(x - a[:, None] * c) / jnp.square(s[:, None]), rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="continuous"):
    models.get_score_fn(sde, apply_fn, None, parameterization="velocity", continuous=False)


def test_bad_weighting_raises_one_line():
  sde = sde_lib.RectifiedFlow()
  with pytest.raises(ValueError, match=r"weighting must be one of"):
    sde_lib.get_loss_fn(sde, weighting="flow")
  with pytest.raises(ValueError, match=r"likelihood_weighting=True is weighting='likelihood'"):
    sde_lib.get_loss_fn(sde, weighting="velocity", likelihood_weighting=True)



@pytest.mark.parametrize("sde", [all_sdes()[1], all_sdes()[3]], ids=["vp", "rf"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 2.0])
@pytest.mark.slow
def test_any_sampling_noise_recovers_the_mixture(sde, eta, mixture, floor):
  """Euler-Maruyama on the reverse SDE with diffusion eta g(t): every eta has the data's marginals, so every
  eta recovers the mixture to sampling noise with the exact score (1000 steps)."""
  fn = samplers.get_sampler(sde, (N_SAMPLES, 2), "pc", predictor="euler_maruyama", corrector="none",
                            num_steps=1000, noise_scale=eta)
  x, nfe = jax.jit(fn, static_argnums=1)(jax.random.key(5), mixture.score_fn(sde))
  for name, value in mixture.mode_metrics(x).items():
    assert value <= TOLERANCE * floor[name], (eta, name, value, floor[name])
  assert int(nfe) == 1001


def test_noise_scale_one_and_zero_are_the_reverse_sde_and_the_flow(mixture):
  sde, score = sde_lib.RectifiedFlow(), mixture.score_fn(sde_lib.RectifiedFlow())
  base = dict(predictor="euler_maruyama", corrector="none", num_steps=50)
  run = lambda **o: samplers.get_sampler(sde, (16, 2), "pc", **base, **o)(jax.random.key(6), score)[0]
  np.testing.assert_allclose(run(noise_scale=1.0), run(), atol=1e-6)
  np.testing.assert_allclose(run(noise_scale=0.0), run(probability_flow=True), atol=1e-6)
  with pytest.raises(ValueError, match="noise_scale needs predictor='euler_maruyama'"):
    samplers.get_sampler(sde, (16, 2), "pc", predictor="reverse_diffusion", noise_scale=0.5)
