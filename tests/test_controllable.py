"""Guidance, inpainting and colorization against the oracle's exact conditionals (data_lib/gmm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from data_lib import GaussianMixture, example_mixture
from samplers import guidance, inpaint
from tests.conftest import SDE_IDS, all_sdes

CLASS = (0, 2)              # example_mixture's components labelled "class A" (weights 0.5 + 0.15)
N_GUIDED = 4096
TOLERANCE = 1.5             # as test_samplers: within 1.5x the 99% noise floor of an exact sample


def _class_ll(g, sde, components):
  return lambda x, t: g.class_log_likelihood_t(x, t, sde, components)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_guided_score_at_scale_one_is_the_class_conditional_score(sde, key):
  """score + grad log p_t(y | x) = grad log p_t(x | y): with the exact classifier, the restricted mixture's score."""
  g = example_mixture(2)
  x = 6 * jax.random.normal(key, (64, 2))
  t = jnp.linspace(0.02, 1.0, 64)
  guided = guidance.guided_score_fn(g.score_fn(sde), _class_ll(g, sde, CLASS), 1.0)
  np.testing.assert_allclose(guided(x, t), g.restrict(CLASS).score_fn(sde)(x, t), rtol=2e-4, atol=2e-4)
  # Another scale is not the conditional (the test can tell a wrong scale or sign).
  wrong = guidance.guided_score_fn(g.score_fn(sde), _class_ll(g, sde, CLASS), 2.0)
  assert np.max(np.abs(wrong(x, t) - g.restrict(CLASS).score_fn(sde)(x, t))) > 0.1


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.slow
def test_classifier_free_guidance_equals_classifier_guidance_with_the_bayes_classifier(scale, key):
  """s + w (s(.|y) - s) = s + w grad log p_t(y | x), since s(.|y) - s is that gradient (Bayes)."""
  sde = all_sdes()[1]
  g = example_mixture(2)
  x = 6 * jax.random.normal(key, (64, 2))
  t = jnp.linspace(0.02, 1.0, 64)
  cfg = guidance.classifier_free_score_fn(g.restrict(CLASS).score_fn(sde), g.score_fn(sde), scale)
  classifier = guidance.guided_score_fn(g.score_fn(sde), _class_ll(g, sde, CLASS), scale)
  np.testing.assert_allclose(cfg(x, t), classifier(x, t), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_guided_sampling_reproduces_the_class_conditional_mixture(sde, key):
  """Guidance at scale 1 through an unmodified sampler (DPM-Solver++, 21 NFE) samples p(x | class)."""
  g = example_mixture(2)
  target = g.restrict(CLASS)
  floor = target.metric_floor(jax.random.key(7), N_GUIDED)
  score = guidance.guided_score_fn(g.score_fn(sde), _class_ll(g, sde, CLASS), 1.0)
  sample_fn = samplers.get_sampler(sde, (N_GUIDED, 2), "dpm_solver_pp", num_steps=20)
  x, nfe = jax.jit(lambda k: sample_fn(k, score))(key)
  for name, value in target.mode_metrics(x).items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])
  assert int(nfe) == 21


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_guidance_scale_raises(bad):
  g = example_mixture(2)
  sde = all_sdes()[1]
  with pytest.raises(ValueError, match="scale"):
    guidance.guided_score_fn(g.score_fn(sde), _class_ll(g, sde, CLASS), bad)
  with pytest.raises(ValueError, match="scale"):
    guidance.classifier_free_score_fn(g.score_fn(sde), g.score_fn(sde), bad)


# ---------------------------------------------------------------------------------- inpainting
def _two_mode_mixture():
  """Observing x0 = 1.5 moves the weights of the x1 = -3 / +3 modes from 0.6 / 0.4 to 0.77 / 0.23 (x0 has
  variance 1 in the first, 0.5 in the second), so an inpainter that ignores the observation's likelihood is off."""
  return GaussianMixture([0.6, 0.4], [[0.0, -3.0], [0.0, 3.0]], [[1.0, 0.25], [0.5, 0.36]])


N_INPAINT = 2048
OBSERVED = 1.5


def _inpaint(sde, algorithm, key, n=N_INPAINT, **options):
  g = _two_mode_mixture()
  known = jnp.zeros((n, 2)).at[:, 0].set(OBSERVED)
  mask = jnp.zeros((n, 2)).at[:, 0].set(1.0)
  fn = inpaint.get_inpainter(sde, (n, 2), "pc", algorithm, **options)
  x, nfe = jax.jit(lambda k: fn(k, g.score_fn(sde), known, mask))(key)
  return np.asarray(x), int(nfe)


@pytest.fixture(scope="module")
def inpaint_target():
  g = _two_mode_mixture()
  target = g.condition(np.array([True, False]), np.array([OBSERVED, 0.0]))
  return target, target.metric_floor(jax.random.key(11), N_INPAINT)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_smc_error_falls_with_particles_to_the_noise_floor(sde, inpaint_target, key):
  """FPS-SMC converges as particles grow: with one particle it is a plain (biased) reverse chain; with 32
  it lands within the noise floor of exact conditional samples, at under a third of the one-particle TV."""
  target, floor = inpaint_target
  one, _ = _inpaint(sde, "smc", key, n_particles=1, num_steps=200)
  many, nfe = _inpaint(sde, "smc", key, n_particles=32, num_steps=200)
  assert np.all(one[:, 0] == OBSERVED) and np.all(many[:, 0] == OBSERVED)
  tv_one = target.mode_metrics(one[:, 1:])["tv"]
  metrics = target.mode_metrics(many[:, 1:])
  for name, value in metrics.items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])
  assert tv_one > 3 * floor["tv"] and metrics["tv"] < tv_one / 3, (tv_one, metrics["tv"])
  assert nfe == 32 * 201                                                # network evaluations: every particle's


@pytest.mark.parametrize("sde", all_sdes()[1:2], ids=SDE_IDS[1:2])
def test_replacement_is_biased_and_keeps_the_observation(sde, inpaint_target, key):
  """score_sde's replacement method: the observed coordinate is returned exactly, the mode weights are off."""
  target, floor = inpaint_target
  for method, options in (("pc", dict(num_steps=200)), ("dpm_solver_pp", dict(num_steps=20))):
    g = _two_mode_mixture()
    known = jnp.zeros((N_INPAINT, 2)).at[:, 0].set(OBSERVED)
    mask = jnp.zeros((N_INPAINT, 2)).at[:, 0].set(1.0)
    fn = inpaint.get_inpainter(sde, (N_INPAINT, 2), method, "replacement", **options)
    x, nfe = jax.jit(lambda k: fn(k, g.score_fn(sde), known, mask))(key)
    assert np.all(np.asarray(x)[:, 0] == OBSERVED)
    assert target.mode_metrics(np.asarray(x)[:, 1:])["tv"] > 3 * floor["tv"], method
    assert int(nfe) == (401 if method == "pc" else 21)


def test_repaint_counts_its_resampling_in_the_nfe(key):
  sde = all_sdes()[1]
  x, nfe = _inpaint(sde, "repaint", key, n=64, n_resample=3, num_steps=20, corrector="none")
  assert nfe == 20 * 3 + 1 and np.all(x[:, 0] == OBSERVED) and np.all(np.isfinite(x))


def test_colorization_basis_is_orthogonal_with_the_grey_axis_first():
  M = samplers.colorization_basis()
  np.testing.assert_allclose(M.T @ M, np.eye(3), atol=1e-12)
  np.testing.assert_allclose(M[:, 0], np.ones(3) / np.sqrt(3), atol=1e-12)


@pytest.mark.parametrize("sde", all_sdes()[:2], ids=SDE_IDS[:2])
@pytest.mark.slow
def test_colorization_samples_the_exact_colour_posterior(sde, key):
  """One-pixel RGB images from a 2-colour mixture: given the grey level, the colours are drawn from
  the exact posterior (the mixture conditioned on its grey coordinate in the orthogonal basis)."""
  M = samplers.colorization_basis()
  colours = np.array([[0.8, -0.6, 0.1], [-0.5, 0.7, 0.4]])             # same grey level 0.1: told apart by chroma
  covs = np.stack([np.diag([0.05, 0.03, 0.04]), np.diag([0.02, 0.06, 0.03])])
  g = GaussianMixture([0.3, 0.7], colours, covs)
  grey = 0.1
  g_u = GaussianMixture([0.3, 0.7], colours @ M, np.einsum("ji,kjl,lm->kim", M, covs, M))
  target = g_u.condition(np.array([True, False, False]), np.array([grey * np.sqrt(3), 0.0, 0.0]))
  n = 2048
  floor = target.metric_floor(jax.random.key(5), n)
  fn = inpaint.get_colorizer(sde, (n, 1, 1, 3), "pc", "smc", n_particles=32, num_steps=200)
  score = lambda x, t: g.score_fn(sde)(x.reshape(-1, 3), t).reshape(x.shape)
  x, _ = jax.jit(lambda k: fn(k, score, jnp.full((n, 1, 1, 1), grey)))(key)
  x = np.asarray(x).reshape(n, 3)
  np.testing.assert_allclose(x.mean(1), grey, atol=1e-5)
  for name, value in target.mode_metrics((x @ M)[:, 1:]).items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])


@pytest.mark.parametrize("args, options, match", [
    (("pc", "nope"), {}, "algorithm"),
    (("ode", "replacement"), {}, "method"),
    (("dpm_solver_pp", "smc"), {}, "smc"),
    (("dpm_solver_pp", "repaint"), {}, "repaint"),
    (("pc", "smc"), dict(predictor="none"), "smc"),
    (("pc", "smc"), dict(corrector="langevin"), "smc"),
    (("pc", "smc"), dict(n_particles=0), "n_particles"),
    (("pc", "smc"), dict(ess_threshold=1.5), "ess_threshold"),
    (("pc", "repaint"), dict(n_resample=0), "n_resample"),
    (("pc", "replacement"), dict(n_particles=4), "n_particles"),
])
def test_bad_inpainter_options_raise(args, options, match):
  with pytest.raises(ValueError, match=match):
    inpaint.get_inpainter(all_sdes()[1], (4, 2), *args, **options)


def test_bad_masks_and_shapes_raise(key):
  sde = all_sdes()[1]
  fn = inpaint.get_inpainter(sde, (4, 2), "pc", "replacement", num_steps=2)
  score = example_mixture(2).score_fn(sde)
  with pytest.raises(ValueError, match="shape"):
    fn(key, score, jnp.zeros((4, 3)), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="mask"):
    fn(key, score, jnp.zeros((4, 2)), jnp.full((4, 2), 0.5))
  with pytest.raises(ValueError, match="RGB"):
    inpaint.get_colorizer(sde, (4, 8, 8, 1))


# ------------------------------------------------------------------------- through main.py
@pytest.mark.slow
def test_main_inpaints_test_digits_and_reports_agreement(tmp_path):
  """--mode sample --config.sampling.condition=inpaint: the inverse path's noise-free mask operator (its json has
  the inverse metrics: operator, m, psnr, consistency), completions keep the observed half exactly, the
  picture has the rows observed | completions | truth, and digits report the classifier agreement."""
  import json

  from PIL import Image

  from tests.test_pipeline import run_main, tiny_flags

  flags = tiny_flags(tmp_path, 2)
  assert run_main(flags + ["--mode=train"]).returncode == 0
  sample = flags + ["--mode=sample", "--config.sampling.condition=inpaint", "--config.sampling.method=pc",
                    "--config.sampling.pc.num_steps=3",
                    "--config.eval.num_samples=20", "--config.eval.batch_size=8", "--config.sampling.inpaint.n_particles=2"]
  done = run_main(sample)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(tmp_path / "samples" / "inpaint_step_2.json") as f:
    metrics = json.load(f)
  assert metrics["observed_error"] == 0.0 and metrics["n"] == 20 and metrics["algorithm"] == "smc"
  assert 0.0 <= metrics["digits_label_agreement"] <= 1.0 and metrics["nfe"] == 2 * (3 + 1)      # 2 particles
  assert (metrics["operator"], metrics["noise_std"], metrics["params"]) == ("mask", 0.0, {"mask": "bottom_half"})
  assert metrics["m"] == 32 and metrics["consistency"] == 0.0 and metrics["options"]["n_particles"] == 2
  assert np.isfinite(metrics["psnr"]) and metrics["nonfinite_samples"] == 0
  with np.load(tmp_path / "samples" / "inpaint_step_2.npz") as f:
    samples, truth, y = f["samples"], f["truth"], f["y"]
  assert samples.shape == truth.shape == y.shape == (20, 8, 8, 1)
  np.testing.assert_array_equal(samples[:, :4], truth[:, :4])          # bottom_half unknown: the top half is kept
  np.testing.assert_array_equal(y[:, :4], truth[:, :4])                # y = mask * truth, noise-free
  assert not y[:, 4:].any()
  assert not np.allclose(samples[:, 4:], truth[:, 4:])
  picture = Image.open(metrics["picture"])
  assert picture.size == (4 * (16 * 9 + 1), 4 * (3 * 9 + 1))           # 16 columns, 3 rows of 8x8 with 1 px gaps
  colour = run_main(flags + ["--mode=sample", "--config.sampling.condition=colorize", "--config.sampling.method=pc"])
  assert colour.returncode == 2 and "data.num_channels=3" in colour.stderr.strip().splitlines()[-1]
  bad = run_main(sample + ["--config.sampling.inpaint.algorithm=repaint", "--config.sampling.method=dpm_solver_pp"])
  last = bad.stderr.strip().splitlines()[-1]                           # the solver's message, naming the section
  assert bad.returncode == 2 and last.startswith("error: sampling.inpaint.algorithm='repaint'") and "'pc'" in last, last


@pytest.mark.slow
def test_main_colorizes_through_the_inverse_path(tmp_path):
  """--mode sample --config.sampling.condition=colorize on RGB images: the noise-free "colour" operator of the
  inverse path; every completion's grey level is the truth's, the observed row shows that grey level."""
  import json

  from PIL import Image

  from tests.test_pipeline import run_main, tiny_flags

  rng = np.random.default_rng(0)
  np.savez(tmp_path / "rgb.npz", train=rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8),
           test=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8))
  flags = tiny_flags(tmp_path, 2) + ["--config.data.dataset=ARRAY", f"--config.data.path={tmp_path / 'rgb.npz'}",
                                     "--config.data.num_channels=3", "--config.training.batch_size=4"]
  trained = run_main(flags + ["--mode=train"])
  assert trained.returncode == 0, trained.stderr[-2000:]
  done = run_main(flags + ["--mode=sample", "--config.sampling.condition=colorize", "--config.sampling.method=pc",
                           "--config.sampling.pc.num_steps=3", "--config.sampling.inpaint.n_particles=2",
                           "--config.eval.num_samples=5", "--config.eval.batch_size=4"])
  assert done.returncode == 0, done.stderr[-2000:]
  with open(tmp_path / "samples" / "colorize_step_2.json") as f:
    metrics = json.load(f)
  assert (metrics["operator"], metrics["noise_std"], metrics["algorithm"]) == ("colour", 0.0, "smc")
  assert metrics["n"] == 5 and metrics["m"] == 64 and metrics["nfe"] == 2 * (3 + 1)
  assert metrics["consistency"] < 1e-5 and np.isfinite(metrics["psnr"])
  with np.load(tmp_path / "samples" / "colorize_step_2.npz") as f:
    samples, truth, observed = f["samples"], f["truth"], f["observed"]
  assert samples.shape == truth.shape == (5, 8, 8, 3) and not np.allclose(samples, truth)
  np.testing.assert_allclose(samples.mean(-1), truth.mean(-1), atol=1e-5)
  np.testing.assert_allclose(observed, np.repeat(truth.mean(-1, keepdims=True), 3, axis=-1), atol=1e-6)
  assert Image.open(metrics["picture"]).size == (4 * (5 * 9 + 1), 4 * (3 * 9 + 1))
