"""Grids fitted from a model and its training data (``samplers.fit_grid.fit_grid_from_model``) and the held-out
mixture family they are evaluated on (``data_lib.heldout``): the fitter takes samples and a score function
only, returns a valid grid that the samplers reproduce when loaded, and lowers its own objective on draws it
was not fitted on."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import heldout
from samplers import common, fit_grid, schedules

NFE = 8


@pytest.fixture(scope="module")
def held_out():
  """A mixture of the held-out family (D = 2, six modes with stds 0.09-1.2): the fitter never sees its parameters."""
  return heldout.heldout_mixtures(per_dim=1, dims=(2,))[0][1]


@pytest.fixture(scope="module")
def fitted(held_out):
  """A UniPC grid at 8 NFE fitted on VP from 1024 samples and a plain score closure (no mixture object)."""
  sde = sde_lib.VPSDE()
  score = held_out.score_fn(sde)
  data = held_out.sample(jax.random.key(11), 1024)
  sigmas, info = fit_grid.fit_grid_from_model(jax.random.key(12), sde, lambda x, t: score(x, t), data, NFE,
                                              method="unipc", batch=256, iters=60)
  return sde, sigmas, info


def test_the_fitter_takes_a_score_function_and_samples_not_a_mixture():
  params = list(inspect.signature(fit_grid.fit_grid_from_model).parameters)
  assert params[:5] == ["key", "sde", "score_fn", "data", "nfe"]
  assert not any("mixture" in p for p in params)


def test_a_fitted_grid_is_a_valid_grid_of_the_requested_length(fitted):
  sde, sigmas, info = fitted
  hi, lo = schedules.sigma_ends(sde, 1e-3, 0.01)
  assert sigmas.shape == (fit_grid.grid_levels("unipc", NFE) + 1,) == (NFE,)
  assert np.all(np.diff(sigmas) < 0)
  assert sigmas[0] == pytest.approx(hi) and sigmas[-1] == pytest.approx(lo)
  times = np.asarray(sde.t_from_sigma(jnp.asarray(sigmas, jnp.float32)))
  assert np.all((times >= 1e-3 - 1e-6) & (times <= sde.T + 1e-5))
  assert info["loss_fitted"] <= min(info["loss_logsnr"], info["loss_edm"])


def test_the_fit_is_deterministic_given_its_key(held_out):
  data = held_out.sample(jax.random.key(1), 64)
  denoise = heldout.mixture_denoiser(held_out)           # one pytree: the second fit reuses the compilation
  fit = lambda: fit_grid.fit_grid_from_denoiser(jax.random.key(2), denoise, data, 4, 50.0, 0.01, 50.0,
                                                method="dpm_solver_pp", batch=16, iters=3, ref_steps=50)[0]
  np.testing.assert_array_equal(fit(), fit())


def test_the_fit_lowers_its_objective_on_draws_it_was_not_fitted_on(fitted, held_out):
  """The objective (end-point error relative to the local data spread, Cauchy-robust) on 1024 fresh prior draws,
  paired per draw: the fitted grid beats its start by more than three standard errors of the mean difference."""
  sde, sigmas, info = fitted
  hi, lo = schedules.sigma_ends(sde, 1e-3, 0.01)
  x_hat = fit_grid.prior_hat(sde, jax.random.key(99), (1024, 2))
  denoise = fit_grid.model_denoiser(sde, held_out.score_fn(sde), 1024)
  ref = fit_grid.reference_solve(denoise, x_hat, hi, lo)
  weight = 1 / (info["delta"]**2 * 2 * fit_grid.local_variance(ref, held_out.sample(jax.random.key(11), 1024), 10))
  start = schedules.sigma_grid(sde, NFE - 1, info["init"])

  def per_draw(s):
    x = fit_grid.denoiser_solve(denoise, x_hat, s, "unipc", NFE)
    return np.asarray(jnp.log1p(jnp.sum(jnp.square(x - ref), 1) * weight))

  diff = per_draw(sigmas) - per_draw(start)
  assert diff.mean() + 3 * diff.std() / np.sqrt(diff.size) < 0, (diff.mean(), diff.std())


@pytest.mark.parametrize("method", fit_grid.FIT_METHODS)
def test_a_saved_grid_samples_as_the_fitter_solved_it(method, held_out, tmp_path):
  """The fitter's solver is the sampler: a perturbed grid saved with ``save_grid`` and sampled through
  ``grid="fitted:<path>"`` gives the fitter's end points from the same prior draws (float rounding)."""
  sde = sde_lib.subVPSDE()
  n = fit_grid.grid_levels(method, 9)
  base = schedules.sigma_grid(sde, n, "logsnr")
  sigmas = base * np.exp(0.3 * np.sin(np.arange(n + 1)))
  sigmas[[0, -1]] = base[[0, -1]]
  path = str(tmp_path / "g.json")
  fit_grid.save_grid(path, {n: sigmas})
  x_T = sde.prior_sampling(jax.random.key(4), (32, 2))
  stepper = samplers.get_stepper(sde, (32, 2), method, nfe=9, grid=f"fitted:{path}")
  x, nfe = samplers.run(stepper, jax.random.key(0), held_out.score_fn(sde), x_init=x_T)
  assert int(nfe) == 9
  np.testing.assert_allclose(x, fit_grid.solve_on_grid(sde, held_out.score_fn(sde), x_T, sigmas, method, 9),
                             atol=5e-4, rtol=1e-4)


def test_bad_requests_are_refused_in_one_line(held_out):
  sde = sde_lib.VPSDE()
  with pytest.raises(ValueError, match="method"):
    fit_grid.fit_grid_from_model(jax.random.key(0), sde, held_out.score_fn(sde), jnp.zeros((64, 2)), 10, method="pc")
  with pytest.raises(ValueError, match="data must be"):
    fit_grid.fit_grid_from_model(jax.random.key(0), sde, held_out.score_fn(sde), jnp.zeros((5, 2)), 10)
  with pytest.raises(ValueError, match="sigmas must have 10 levels"):
    fit_grid.denoiser_solve(lambda x, s: x, jnp.zeros((2, 2)), np.ones(5), "unipc", 10)


def test_the_held_out_family_is_fixed_varied_and_separable():
  family = heldout.heldout_mixtures()
  again = heldout.heldout_mixtures()
  assert [m.dim for _, m in family] == [2, 2, 4, 4, 8, 8, 16, 16]
  for (_, m), (_, m2) in zip(family, again):
    np.testing.assert_array_equal(np.asarray(m.means), np.asarray(m2.means))
    assert 2 <= m.num_components <= 6
    sd = np.sqrt(np.diagonal(np.asarray(m.covs, np.float64), axis1=1, axis2=2)).max(1)
    mu = np.asarray(m.means, np.float64)
    for i in range(len(mu)):
      for j in range(i):
        assert np.linalg.norm(mu[i] - mu[j]) >= heldout.SEPARATION * max(sd[i], sd[j]) * (1 - 1e-5)
  assert len({m.num_components for _, m in family}) > 1
  assert not np.array_equal(np.asarray(heldout.heldout_mixtures(1)[0][1].means), np.asarray(family[0][1].means))


@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VPSDE()], ids=["ve", "vp"])
def test_the_mixture_denoiser_is_tweedies_formula_of_the_exact_score(sde, held_out):
  x = held_out.sample(jax.random.key(0), 64) + 0.5 * jax.random.normal(jax.random.key(1), (64, 2))
  exact = common.scaled_denoiser(sde, held_out.score_fn(sde), 64)
  padded = heldout.mixture_denoiser(held_out, k_max=8)
  for sigma in (0.02, 0.5, 5.0):
    np.testing.assert_allclose(padded(x, jnp.float32(sigma)), exact(x, jnp.float32(sigma)), atol=2e-5, rtol=1e-4)
