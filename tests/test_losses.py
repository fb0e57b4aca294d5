"""Score-matching losses checked against the oracle's exact scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from data_lib import example_mixture
from tests.conftest import SDE_IDS, all_sdes

N_DATA = 40000


def _mean_and_se(v):
  v = np.asarray(v, np.float64)
  return v.mean(), v.std(ddof=1) / np.sqrt(v.size)


def _esm_per_example(sde, key, x, score_fn, exact_fn, reduce_mean, likelihood_weighting, eps=1e-5):
  """Explicit score matching lambda/2 |s - grad log p_t|^2 on the DSM loss's own draws of (t, x_t)."""
  p = sde_lib.perturb(key, sde, x, t_min=eps)
  sq = jnp.square(score_fn(p.x_t, p.t) - exact_fn(p.x_t, p.t))
  lam = jnp.square(sde.diffusion(p.t)) if likelihood_weighting else jnp.square(p.s)
  return lam * (jnp.mean(sq, 1) if reduce_mean else 0.5 * jnp.sum(sq, 1))


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("reduce_mean, likelihood_weighting", [(False, False), (True, False), (False, True)])
def test_vincent_identity_dsm_minus_esm_is_constant(sde, reduce_mean, likelihood_weighting, key):
  """J_DSM(s) - J_ESM(s) does not depend on s (Vincent 2011; seed 000)."""
  g = example_mixture(2)
  x = g.sample(jax.random.key(1), N_DATA)
  exact = g.score_fn(sde)
  scores = [lambda y, t: 0.7 * exact(y, t), lambda y, t: exact(y, t) + jnp.tanh(y)]
  dsm = sde_lib.get_per_example_loss_fn(sde, reduce_mean=reduce_mean, likelihood_weighting=likelihood_weighting)
  gaps = [dsm(key, s, x) - _esm_per_example(sde, key, x, s, exact, reduce_mean, likelihood_weighting) for s in scores]
  mean, se = _mean_and_se(gaps[0] - gaps[1])
  assert abs(mean) < 4 * se, (mean, se)
  # ... while the two losses themselves differ by far more than that noise.
  loss_mean, loss_se = _mean_and_se(dsm(key, scores[0], x) - dsm(key, scores[1], x))
  assert abs(loss_mean) > 10 * loss_se


def _directional_derivative(loss, key, x, score_fn, direction):
  """d/d delta of the per-example losses at score_fn + delta * direction, delta = 0: [B]."""
  def at(delta):
    return loss(key, lambda y, t: score_fn(y, t) + delta * direction(y, t), x)
  return jax.jvp(at, (0.0,), (1.0,))[1]


LOSS_CASES = [
    ("dsm-continuous", dict(method="dsm"), False),
    ("dsm-discrete", dict(method="dsm", continuous=False), True),       # SMLD on VE, DDPM on VP
    ("ssm-rademacher", dict(method="ssm", projection="rademacher"), False),
    ("ssm-gaussian-plain", dict(method="ssm", projection="gaussian", variance_reduction=False, n_projections=2), False),
]


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("name, options, discrete", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_exact_score_minimises_the_loss(sde, name, options, discrete, key):
  """The loss's derivative along any direction vanishes at the exact score (Tweedie), not elsewhere."""
  g = example_mixture(2)
  x = g.sample(jax.random.key(2), N_DATA)
  exact = g.score_fn(sde, discrete=discrete)
  loss = sde_lib.get_per_example_loss_fn(sde, **options)
  directions = [exact, lambda y, t: jnp.tanh(y)]
  for direction in directions:
    mean, se = _mean_and_se(_directional_derivative(loss, key, x, exact, direction))
    assert abs(mean) < 4 * se, (name, mean, se)
  wrong = lambda y, t: 0.6 * exact(y, t)
  mean, se = _mean_and_se(_directional_derivative(loss, key, x, wrong, exact))
  assert mean < -4 * se, (name, mean, se)                  # moving towards the exact score lowers it


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_loss_fn_is_the_batch_mean_and_jits(sde, key):
  g = example_mixture(2)
  x = g.sample(key, 64)
  score_fn = g.score_fn(sde)
  loss_fn = jax.jit(sde_lib.get_loss_fn(sde), static_argnums=1)
  per_example = sde_lib.get_per_example_loss_fn(sde)
  np.testing.assert_allclose(loss_fn(key, score_fn, x), jnp.mean(per_example(key, score_fn, x)), rtol=1e-5)


def test_invalid_loss_options_raise():
  sde = sde_lib.VPSDE()
  for kwargs, match in [(dict(method="nce"), "method must be one of"), (dict(eps=0.0), "t_min"), (dict(t_min=0.0), "t_min"),
                        (dict(eps=1.5), "t_min"), (dict(projection="sphere"), "projection"),
                        (dict(n_projections=0), "n_projections"),
                        (dict(method="ssm", continuous=False), "continuous=False"),
                        (dict(continuous=False, likelihood_weighting=True), "continuous=False")]:
    with pytest.raises(ValueError, match=match):
      sde_lib.get_loss_fn(sde, **kwargs)
