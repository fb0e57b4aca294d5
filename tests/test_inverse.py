"""Inverse problems (samplers.inverse, samplers.observation): the operators are linear with exact transposes and
SVDs; each algorithm keeps its known properties; the particle method approaches the exact posterior
(``GaussianMixture.posterior``) as particles grow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import gmm
from testkit.posterior_metrics import posterior_floor, posterior_metrics
from tests.conftest import SDE_IDS, all_sdes

IMAGE = (4, 4, 1)


def _shape(op):
  return (4, 4, 3) if op == "colour" else IMAGE


@pytest.mark.parametrize("op", samplers.OPERATORS)
def test_operators_have_exact_transposes_and_svds(op):
  """<A x, y> = <x, A^T y>; U^T A x = S V^T x; V orthogonal (v(vt(x)) = x); A^+ A x = x on A's row space."""
  shape = _shape(op)
  obs = samplers.make_observation(op, shape)
  x = jax.random.normal(jax.random.key(0), (3,) + shape)
  y = obs.forward(x)
  w = jax.random.normal(jax.random.key(1), y.shape)
  np.testing.assert_allclose(jnp.sum(y * w), jnp.sum(x.reshape(3, -1) * obs.transpose(w).reshape(3, -1)), rtol=1e-5)
  sp = obs.svd((3,) + shape)
  np.testing.assert_allclose(sp.ut(y), sp.s * sp.vt(x), atol=1e-5)
  np.testing.assert_allclose(sp.v(sp.vt(x)), x, atol=1e-5)
  np.testing.assert_allclose(sp.vt(sp.v(sp.vt(x))), sp.vt(x), atol=1e-5)
  if obs.pinv is not None:                                           # A A^+ A = A
    np.testing.assert_allclose(obs.forward(obs.pinv(y).reshape(x.shape)), y, atol=1e-5)


def test_operator_facts():
  """Average pooling: singular values 1/f; the grey level and masks are projectors; a 3x3 box blur with zero
  padding on 4 pixels has the singular values of its 1-D factor (1 + 2 cos(k pi / 5)) / 3, products."""
  sp = samplers.make_observation("superres", IMAGE, factor=2).svd((1,) + IMAGE)
  np.testing.assert_allclose(np.sort(np.asarray(sp.s))[-4:], 0.5, rtol=1e-5)
  assert int(jnp.sum(sp.s > 0)) == 4
  one_d = np.abs(1 + 2 * np.cos(np.arange(1, 5) * np.pi / 5)) / 3
  sp = samplers.make_observation("blur_uniform", IMAGE, kernel_size=3).svd((1,) + IMAGE)
  np.testing.assert_allclose(np.sort(np.asarray(sp.s)), np.sort(np.outer(one_d, one_d).ravel()), atol=1e-5)
  assert samplers.make_observation("colour", (2, 2, 3)).projector
  assert samplers.make_observation("random_pixels", IMAGE, fraction=0.5).projector
  y = samplers.make_observation("compressed_sensing", IMAGE, ratio=0.25).forward(jnp.ones((2,) + IMAGE))
  assert y.shape == (2, 4)


@pytest.mark.parametrize("call, match", [
    (lambda: samplers.make_observation("fourier", IMAGE), "operator must be one of"),
    (lambda: samplers.make_observation("superres", IMAGE, factor=3), "factor must divide"),
    (lambda: samplers.make_observation("superres", IMAGE, kernel_size=3), r"unknown parameter\(s\) \['kernel_size'\]"),
    (lambda: samplers.make_observation("blur_gaussian", IMAGE, kernel_size=4), "kernel_size must be odd"),
    (lambda: samplers.make_observation("blur_gaussian", IMAGE, blur_std=-1.0), "blur_std must be > 0"),
    (lambda: samplers.make_observation("mask", IMAGE, 0.1, mask="middle"), "mask must be one of"),
    (lambda: samplers.make_observation("mask", IMAGE, -0.1), "noise_std must be a finite number >= 0"),
    (lambda: samplers.make_observation("colour", IMAGE), "needs 3 channels"),
    (lambda: samplers.make_observation("compressed_sensing", IMAGE, ratio=0.0), "ratio must be > 0"),
    (lambda: samplers.observation_from_matrix(np.ones(3)), r"A must be a finite matrix \[m, d\]"),
    (lambda: samplers.linear_observation(lambda x: x**2, IMAGE), "forward is not linear"),
])
def test_bad_operators_raise_one_line(call, match):
  with pytest.raises(ValueError, match=match) as err:
    call()
  assert "\n" not in str(err.value)


def test_linear_observation_derives_the_transpose():
  kernel = jnp.asarray(np.arange(16.0).reshape(4, 4) / 10)
  obs = samplers.linear_observation(lambda x: jnp.einsum("ij,bjk->bik", kernel, x), (4, 2))
  x, w = jax.random.normal(jax.random.key(0), (2, 4, 2)), jax.random.normal(jax.random.key(1), (2, 4, 2))
  np.testing.assert_allclose(jnp.sum(obs.forward(x) * w), jnp.sum(x * obs.transpose(w)), rtol=1e-5)


SDE = all_sdes()[1]                                                          # VP


@pytest.fixture(scope="module")
def mixture():
  """A 3-mode mixture on 4 x 4 x 1 'images' (16 dims), its score under every SDE exact."""
  rng = np.random.default_rng(0)
  d = math.prod(IMAGE)
  return gmm.GaussianMixture(np.array([0.5, 0.3, 0.2]), rng.normal(size=(3, d)), np.stack([0.05 * np.eye(d)] * 3))


def _image_score(mixture, sde):
  flat = mixture.score_fn(sde)
  return lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def test_ddrm_with_identity_and_no_noise_returns_y(mixture):
  """A = I, noise 0, eta_b = 1: every coordinate is observed and DDRM's last step copies y_bar = y."""
  y = jax.random.normal(jax.random.key(3), (4,) + IMAGE)
  for obs in (samplers.mask_observation(jnp.ones(IMAGE)), samplers.observation_from_matrix(np.eye(16))):
    solve = samplers.get_inverse_solver(SDE, (4,) + IMAGE, obs, "ddrm", num_steps=5)
    x, nfe = solve(jax.random.key(0), _image_score(mixture, SDE), obs.forward(y))
    np.testing.assert_allclose(x, y, atol=1e-5)
    assert int(nfe) == 5


@pytest.mark.parametrize("algorithm, options", [("dps", dict(step_size=0.0)), ("pigdm", dict(scale=0.0))])
def test_zero_guidance_is_unconditional_sampling(mixture, algorithm, options):
  obs = samplers.make_observation("superres", IMAGE, 0.1)
  shape, score = (8,) + IMAGE, _image_score(mixture, SDE)
  y = obs.forward(jnp.ones(shape))
  x, nfe = samplers.get_inverse_solver(SDE, shape, obs, algorithm, num_steps=20, **options)(jax.random.key(4), score, y)
  ref, ref_nfe = samplers.get_sampler(SDE, shape, "pc", num_steps=20)(jax.random.key(4), score)
  # pigdm: equal to float rounding (the zero-weighted term changes how XLA fuses the score's arithmetic)
  np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=0, atol=1e-5)
  assert int(nfe) == int(ref_nfe) + (20 if algorithm == "dps" else 0)          # dps: one gradient per step


def test_noise_free_replacement_meets_the_observation(mixture):
  """Replacement keeps masks' observed pixels bit for bit and satisfies any other noise-free A x = y."""
  shape, score = (8,) + IMAGE, _image_score(mixture, SDE)
  truth = mixture.sample(jax.random.key(5), 8).reshape(shape)
  for op in ("random_pixels", "superres", "compressed_sensing"):
    obs = samplers.make_observation(op, IMAGE)
    y = obs.forward(truth)
    x, _ = samplers.get_inverse_solver(SDE, shape, obs, "replacement", num_steps=20)(jax.random.key(6), score, y)
    if op == "random_pixels":
      seen = np.asarray(obs.forward(jnp.ones(shape))) > 0
      np.testing.assert_array_equal(np.asarray(x)[seen], np.asarray(truth)[seen])
    else:
      np.testing.assert_allclose(obs.forward(x), y, atol=2e-5)


def test_nfe_counts_every_particle(mixture):
  obs = samplers.make_observation("mask", IMAGE, 0.05)
  solve = samplers.get_inverse_solver(SDE, (2,) + IMAGE, obs, "smc", n_particles=4, num_steps=10)
  _, nfe = solve(jax.random.key(0), _image_score(mixture, SDE), jnp.zeros((2,) + IMAGE))
  assert int(nfe) == 4 * (10 + 1)                                        # 10 steps and the final denoising, x 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(algorithm="magic"), "algorithm must be one of"),
    (dict(algorithm="repaint", method="edm_heun"), "method must be one of \\['pc'\\] with algorithm 'repaint'"),
    (dict(algorithm="ddrm", method="edm_heun"), "runs its own steps"),
    (dict(algorithm="replacement", noise=0.1), "needs a noise-free observation"),
    (dict(algorithm="dps", method="ode"), "method must be one of"),
    (dict(algorithm="pigdm", step_size=1.0), r"unknown option\(s\) \['step_size'\]"),
    (dict(algorithm="ddrm", eta=1.5), "eta must be"),
])
def test_bad_solver_arguments_raise_one_line(kwargs, match):
  algorithm, method, noise = kwargs.pop("algorithm"), kwargs.pop("method", None), kwargs.pop("noise", 0.0)
  obs = samplers.make_observation("superres", IMAGE, noise)
  with pytest.raises(ValueError, match=match) as err:
    samplers.get_inverse_solver(SDE, (2,) + IMAGE, obs, algorithm, method, **kwargs)
  assert "\n" not in str(err.value)


def test_y_of_the_wrong_shape_raises_one_line(mixture):
  obs = samplers.make_observation("superres", IMAGE)
  solve = samplers.get_inverse_solver(SDE, (2,) + IMAGE, obs, "dps", num_steps=3)
  with pytest.raises(ValueError, match=r"y must have the observation's output shape \(2, 2, 2, 1\)"):
    solve(jax.random.key(0), _image_score(mixture, SDE), jnp.zeros((2, 4, 4, 1)))


def _posterior_case(n, noise=0.1, seed=7):
  """(mixture, observation, y [n, ...] one observation repeated, exact posterior) for noisy x2 super-resolution
  of a mixture whose modes differ mostly where A does not look (means: 2 x A's null-space part + 0.5 x its
  row-space part), so the datum reweights the modes (0.5 / 0.3 / 0.2 -> 0.92 / 0.08 / 0.00) but does not pick one."""
  obs = samplers.make_observation("superres", IMAGE, noise)
  A = np.asarray(obs.forward(jnp.eye(16).reshape((16,) + IMAGE))).reshape(16, -1).T
  row = np.linalg.pinv(A) @ A
  raw = np.random.default_rng(0).normal(size=(3, 16))
  mixture = gmm.GaussianMixture(np.array([0.5, 0.3, 0.2]), 2.0 * raw @ (np.eye(16) - row) + 0.5 * raw @ row,
                                np.stack([0.05 * np.eye(16)] * 3))
  truth = mixture.sample(jax.random.key(seed), 1).reshape((1,) + IMAGE)
  y1 = obs.forward(truth) + noise * jax.random.normal(jax.random.key(seed + 1), obs.forward(truth).shape)
  post = mixture.posterior(A, np.asarray(y1).reshape(-1), noise)
  return mixture, obs, jnp.repeat(y1, n, axis=0), post


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_particle_error_falls_with_particles(sde):
  """Noisy super-resolution, 200 steps: one particle (no reweighting) misweights the modes; the TV distance of
  the mode weights to the exact posterior's falls with every 4x more particles by more than the sampling noise
  (the floor: 99% of exact samples of the same size are closer). (Measured, VP: 21, 6.9, 3.5 floors at 1, 4, 16
  particles; 2.0 at 64 particles or at 16 particles and 1,000 steps: the method converges as both grow.)"""
  n = 1024
  mixture, obs, y, post = _posterior_case(n)
  assert post.weights[0] > 0.9 and post.weights[1] > 0.05                 # a multimodal posterior, reweighted
  score = _image_score(mixture, sde)
  floor = posterior_floor(post, mixture, n, jax.random.key(9))
  tv = []
  for particles in (1, 4, 16):
    solve = samplers.get_inverse_solver(sde, (n,) + IMAGE, obs, "smc", n_particles=particles, num_steps=200)
    x, _ = jax.jit(lambda k, y: solve(k, score, y))(jax.random.key(10), y)
    tv.append(posterior_metrics(np.asarray(x).reshape(n, -1), post, mixture)["tv"])
  assert tv[0] - tv[1] > floor["tv"] and tv[1] - tv[2] > floor["tv"], (tv, floor["tv"])


@pytest.mark.parametrize("algorithm", ["replacement", "repaint"])
def test_ladder_models_are_conditioned_on_their_ladder(algorithm):
  """A discrete-ladder model (PC with ladder=True) is conditioned with the chain's own marginals: the observed
  part at level i is a_i y + s_i z with the ladder's (a_i, s_i), and the data itself at level -1."""
  from samplers import inpaint
  sde = sde_lib.VPSDE(0.1, 5.0, 10)
  a, s = sde.discrete_coefs()
  for i in (9, 4, 0):
    np.testing.assert_allclose(inpaint.ladder_marginal(sde, sde.discrete_time(i)), (a[i], s[i]), rtol=1e-6)
  np.testing.assert_allclose(inpaint.ladder_marginal(sde, sde.discrete_time(-1)), (1.0, 0.0))
  mask = jnp.asarray(np.random.default_rng(0).random((8, 4)) < 0.5, jnp.float32)
  known = jnp.ones((8, 4))
  fn = samplers.get_inpainter(sde, (8, 4), "pc", algorithm, ladder=True, predictor="ancestral_sampling",
                              corrector="none", **({"n_resample": 2} if algorithm == "repaint" else {}))
  x, nfe = fn(jax.random.key(0), lambda x, t: -x, known, mask)
  assert int(nfe) == 10 * (2 if algorithm == "repaint" else 1) and bool(jnp.all(jnp.where(mask > 0, x == 1.0, True)))


@pytest.mark.parametrize("sde", all_sdes()[:3], ids=["VE", "VP", "subVP"])
def test_pigdm_is_exact_for_a_standard_normal_prior(sde):
  """For x_0 ~ N(0, I), p(x_0 | x_t) = N(a x / (a^2 + s^2), r_t^2 I) exactly, so PiGDM's eq. 7 term is the exact
  grad_x log p_t(y | x) = a / (a^2 + s^2) A^T (r_t^2 A A^T + noise^2 I)^-1 (y - A a x / (a^2 + s^2));
  weighting="signal" multiplies it by a(t)^2 (1 on VE)."""
  shape, noise = (3,) + IMAGE, 0.1
  obs = samplers.make_observation("superres", IMAGE, noise)
  A = np.asarray(jax.vmap(lambda e: obs.forward(e.reshape((1,) + IMAGE)).reshape(-1))(jnp.eye(16))).T   # [m, 16]
  normal = gmm.GaussianMixture(np.ones(1), np.zeros((1, 16)), np.eye(16)[None])
  score = _image_score(normal, sde)
  x = jax.random.normal(jax.random.key(1), shape) * 2.0
  y = jax.random.normal(jax.random.key(2), (3, A.shape[0]))
  t = jnp.array([0.9, 0.4, 0.05])
  a, s = (np.asarray(v, np.float64) for v in sde.marginal_coefs(t))
  sp = obs.svd(shape)
  for weighting, w in (("none", np.ones(3)), ("signal", a**2)):
    guided = samplers.inverse.pigdm_score_fn(sde, score, sp, y, noise, weighting=weighting)(x, t)
    for i in range(3):
      k, r2 = a[i] / (a[i]**2 + s[i]**2), s[i]**2 / (a[i]**2 + s[i]**2)
      cov = r2 * A @ A.T + noise**2 * np.eye(A.shape[0])
      xi = np.asarray(x[i], np.float64).reshape(-1)
      exact = k * A.T @ np.linalg.solve(cov, np.asarray(y[i], np.float64) - k * A @ xi)
      got = np.asarray(guided[i] - score(x, t)[i], np.float64).reshape(-1)
      np.testing.assert_allclose(got, w[i] * exact, rtol=2e-3, atol=2e-4 * np.abs(exact).max())
