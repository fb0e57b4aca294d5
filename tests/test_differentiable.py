"""jax.grad through every sampler and the likelihood, against finite differences and the oracle.

The score is the exact one of the oracle mixture shifted by theta [D]: p_t^theta(x) = p_t(x - a(t) theta),
so score^theta(x, t) = score_t(x - a(t) theta) (the shifted means a(t)(mu_k + theta), Gaussian
convolution as in data_lib/gmm.py). With fixed keys a sampler is a smooth function of theta, and the
likelihood of x and theta. Everything runs in float64 (``jax.enable_x64``) so that central differences
are accurate: with step h the error is h^2 f'''/6 (truncation) plus ~1e-16 |f| / h (rounding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import example_mixture

VE, VP, SUBVP = sde_lib.VESDE(0.01, 50.0, 1000), sde_lib.VPSDE(0.1, 20.0, 1000), sde_lib.subVPSDE(0.1, 20.0, 1000)
MIXTURE = example_mixture(2)
THETA = np.array([0.3, -0.2])
DIRECTION = np.array([0.6, 0.8])      # a unit vector: the tests compare directional derivatives
STEPS = (1e-3, 1e-4, 1e-5)            # finite-difference steps tried
# Relative tolerance of a derivative of a discrete map. A central difference with step h is off by
# ~h^2 f'''/6 (truncation) plus ~1e-16 |f| / h times the map's rounding amplification; we take the h
# in STEPS with the smallest estimated error |fd(h) - fd(2h)| (~3 h^2 f'''/6 + rounding, Richardson),
# require that estimate to be under a tenth of the tolerance (so the reference is good to ~1e-8), and
# allow 1e-7 relative: far below the O(1) relative error of a dropped term or a flipped sign.
RTOL_DISCRETE = 1e-7


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def shifted_score(sde, theta):
  """The exact score of the mixture with every mean moved by theta: score_t(x - a(t) theta)."""

  def score_fn(x, t):
    a = sde.marginal_coefs(t)[0]
    return MIXTURE.score_t(x - a[:, None] * theta, t, sde)

  return score_fn


def central_difference(f, x, v):
  """(fd, err): the central difference (f(x + h v) - f(x - h v)) / 2h at the h in STEPS with the
  smallest estimated error err = |fd(h) - fd(2h)|."""
  fd = lambda h: float((f(x + h * v) - f(x - h * v)) / (2 * h))
  return min(((fd(h), abs(fd(h) - fd(2 * h))) for h in STEPS), key=lambda pair: pair[1])


def assert_matches_difference(ad, fd, err, rtol=RTOL_DISCRETE):
  tol = rtol * max(abs(fd), 1.0)
  assert err < tol / 10, f"finite difference not converged: fd={fd}, estimated error {err:.2e}"
  assert abs(ad - fd) < tol, f"jax.grad {ad} != central difference {fd} (tol {tol:.2e})"


def sample_loss(sde, method, key, **options):
  """theta -> mean_b |x_b|^2 of the sampler's output driven by the shifted score."""
  sample_fn = samplers.get_sampler(sde, (4, 2), method, **options)
  return lambda theta: jnp.mean(jnp.sum(sample_fn(key, shifted_score(sde, theta))[0] ** 2, axis=1))


SAMPLER_CASES = [
    ("pc", VP, dict(num_steps=8)),                                   # reverse diffusion + Langevin (batch rule)
    ("pc", VE, dict(num_steps=6, predictor="euler_maruyama", langevin_step_rule="expected", checkpoint=True)),
    ("ode", VE, dict(solver="heun", num_steps=12)),                  # fixed steps: the discrete map exactly
    ("ald", VE, dict(num_steps=3, corrector_steps=3)),
    ("ald", SUBVP, dict(num_steps=2, corrector_steps=2, checkpoint=True)),
    ("edm_heun", SUBVP, dict(nfe=9, s_churn=2.0)),
    ("edm_heun", VE, dict(nfe=7, checkpoint=True)),
    ("dpm_solver_pp", VP, dict(nfe=6)),
    ("unipc", SUBVP, dict(nfe=6, checkpoint=True)),                  # checkpoint: jax.checkpoint'd loop body
]


def _case_id(case):
  method, sde, options = case
  return f"{method}-{type(sde).__name__}" + ("-checkpoint" if options.get("checkpoint") else "")


@pytest.mark.parametrize("method,sde,options", SAMPLER_CASES, ids=[_case_id(c) for c in SAMPLER_CASES])
def test_sampler_gradient_matches_central_difference(method, sde, options):
  """d/dtheta mean |x|^2 with fixed keys: jax.grad equals the central difference of the same sampler
  (one compiled value_and_grad serves both, to keep compile time down)."""
  value_and_grad = jax.jit(jax.value_and_grad(sample_loss(sde, method, jax.random.key(3), **options)))
  fd, err = central_difference(lambda th: value_and_grad(th)[0], THETA, DIRECTION)
  assert_matches_difference(float(value_and_grad(THETA)[1] @ DIRECTION), fd, err)


@pytest.fixture(scope="module")
def exact_flow_derivative():
  """d/dtheta of the VE ODE sampler's loss for the exact flow: the central difference of a fixed 32-step
  Tsit5 solve (order 5; 64 steps change it by < 1e-9 relative)."""
  with jax.enable_x64(True):
    loss = sample_loss(VE, "ode", jax.random.key(3), solver="tsit5", num_steps=32)
    fd, err = central_difference(jax.jit(loss), THETA, DIRECTION)
  assert err < 1e-8 * abs(fd)
  return fd


@pytest.mark.parametrize("adjoint", ["recursive_checkpoint", "backsolve", "direct"])
@pytest.mark.slow
def test_adaptive_ode_gradient_matches_the_exact_flow(adjoint, exact_flow_derivative):
  """An adaptive solve's gradient (its step sizes are not differentiated; backsolve solves the continuous
  adjoint) is the exact flow's derivative to O(rtol): within 10 rtol relative (measured: ~0.05 rtol).
  A finite difference of the adaptive solve itself is no reference: its steps jump with theta."""
  rtol = 1e-6
  loss = sample_loss(VE, "ode", jax.random.key(3), rtol=rtol, atol=rtol, adjoint=adjoint, max_steps=128)
  grad = jax.jit(jax.grad(loss))(THETA)
  assert abs(float(grad @ DIRECTION) - exact_flow_derivative) < 10 * rtol * abs(exact_flow_derivative)


@pytest.mark.slow
def test_likelihood_gradient_matches_central_difference():
  """d logp / dx and d logp / dtheta (Hutchinson, probes fixed by the key, fixed Tsit5 steps: a smooth
  discrete map) equal central differences."""
  sde, key = SUBVP, jax.random.key(5)
  x = np.asarray(MIXTURE.sample(jax.random.key(6), 3), np.float64)
  likelihood_fn = samplers.get_likelihood_fn(sde, t_min=1e-3, solver="tsit5", num_steps=8)
  total = lambda x, theta: jnp.sum(likelihood_fn(key, shifted_score(sde, theta), x)[0])
  dx_dir = np.asarray(jax.random.normal(jax.random.key(7), x.shape), np.float64)
  value_and_grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))   # one compile for both
  grad_x, grad_theta = value_and_grad(x, THETA)[1]
  f = lambda x, theta: value_and_grad(x, theta)[0]
  assert_matches_difference(float(jnp.sum(grad_x * dx_dir)), *central_difference(lambda y: f(y, THETA), x, dx_dir))
  assert_matches_difference(float(grad_theta @ DIRECTION), *central_difference(lambda th: f(x, th), THETA, DIRECTION))


@pytest.mark.parametrize("adjoint", ["recursive_checkpoint", "backsolve"])
@pytest.mark.slow
def test_exact_likelihood_gradient_matches_the_closed_form(adjoint):
  """The exact-divergence likelihood with the prior mismatch put back, logp - prior_logp(z) + log p_T(z)
  (= log p_eps(x) up to solver error, tests/test_likelihood.py), has the oracle's gradients:
  d/dx = score_eps^theta(x) and d/dtheta = -a(eps) sum_b score_eps^theta(x_b). Tolerance 10 rtol
  relative to the largest component (adaptive solve: O(rtol) error, as the ODE sampler test)."""
  sde, eps, rtol = VP, 1e-3, 1e-6
  x = np.asarray(MIXTURE.sample(jax.random.key(6), 3), np.float64)
  likelihood_fn = samplers.get_likelihood_fn(sde, t_min=eps, divergence="exact", rtol=rtol, atol=rtol,
                                             adjoint=adjoint, max_steps=256)

  def corrected(x, theta):
    logp, z, _ = likelihood_fn(jax.random.key(0), shifted_score(sde, theta), x)
    a_T = sde.marginal_coefs(jnp.full(x.shape[:1], sde.T))[0]
    log_pT = MIXTURE.log_prob_t(z - a_T[:, None] * theta, jnp.full(x.shape[:1], sde.T), sde)
    return jnp.sum(logp - sde.prior_logp(z) + log_pT)

  grad_x, grad_theta = jax.jit(jax.grad(corrected, argnums=(0, 1)))(x, THETA)
  t = jnp.full(x.shape[:1], eps)
  a = float(sde.marginal_coefs(t)[0][0])
  score = np.asarray(MIXTURE.score_t(x - a * THETA, t, sde))             # closed form, data_lib/gmm.py
  tol = 10 * rtol * np.max(np.abs(score))
  np.testing.assert_allclose(grad_x, score, rtol=0, atol=tol)
  np.testing.assert_allclose(grad_theta, -a * score.sum(0), rtol=0, atol=3 * tol)


def test_unknown_adjoint_is_rejected():
  with pytest.raises(ValueError, match=r"adjoint must be one of \['backsolve', 'direct', 'recursive_checkpoint'\]"):
    samplers.get_sampler(VE, (4, 2), "ode", adjoint="reversible")
  with pytest.raises(ValueError, match="adjoint must be one of"):
    samplers.get_likelihood_fn(VE, adjoint="adjoint")
  assert "adjoint" in samplers.sampler_option_names("ode")
  assert all("checkpoint" in samplers.sampler_option_names(m) for m in ("pc", "ald", "edm_heun", "dpm_solver_pp", "unipc"))
