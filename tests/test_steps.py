"""The one sampling core: the step protocol and its loop, the options dataclasses, observations.

Proves: every fixed-grid method runs through ``samplers.run`` with a per-step callback that sees every level
in order and can replace the sample; the conditional algorithms run on any projector observation and sample
the exact conditional of the oracle; the README's option table is the one the options dataclasses generate.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from data_lib import GaussianMixture, example_mixture
from samplers.vocabulary import markdown_table
from tests.conftest import all_sdes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"pc": dict(num_steps=12), "ald": dict(num_steps=3, corrector_steps=4), "edm_heun": dict(nfe=9),
         "dpm_solver_pp": dict(num_steps=6), "unipc": dict(num_steps=6, order=3)}


def _vocabulary_tables(path):
  """The bodies of every ``<!-- vocabulary: ... -->`` .. ``<!-- vocabulary end -->`` block of a file."""
  text = open(os.path.join(ROOT, path), encoding="utf-8").read()
  bodies, start = [], text.find("<!-- vocabulary:")
  while start >= 0:
    end = text.index("<!-- vocabulary end -->", start)
    bodies.append(text[text.index("\n", start) + 1:end].strip())
    start = text.find("<!-- vocabulary:", end)
  return bodies


def test_the_guide_holds_the_generated_option_table():
  """docs/samplers.md holds the table; README.md, if it shows one too, holds the same."""
  guide = _vocabulary_tables("docs/samplers.md")
  assert len(guide) == 1, "docs/samplers.md must hold one vocabulary block"
  for path, bodies in (("docs/samplers.md", guide), ("README.md", _vocabulary_tables("README.md"))):
    for body in bodies:
      assert body == markdown_table(), f"{path}'s vocabulary table is stale: python -m samplers.vocabulary"


def test_the_readme_names_every_conditioning_field_and_condition():
  """The sampling section's fields beyond the methods' options (the table above) and the vocabulary's shared
  ones are conditioning fields; the line under the README's table names each, and each sampling.condition."""
  from schema import sampling as schema_sampling
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  shared = {"method", "t_min", "denoise", "nfe"}
  fields = {f.name for f in dataclasses.fields(schema_sampling.Sampling)} - set(samplers.METHODS) - shared
  assert fields >= {"guidance_scale", "guidance_interval", "inpaint", "inverse"}
  for name in sorted(fields) + list(schema_sampling.CONDITIONS):
    assert f"`{name}`" in text, f"README.md does not name sampling.{name}"


def test_every_method_is_registered_with_an_options_dataclass_and_the_stepper_methods_step():
  assert set(samplers.STEPPER_METHODS) == set(samplers.METHODS) - {"ode", "sde_adaptive"}
  for name, method in samplers.METHODS.items():
    defaults = method.options()
    assert dataclasses.is_dataclass(defaults) and samplers.get_options(name) == defaults
    assert method.fast == ("nfe" in method.option_names) and (name in samplers.FAST_METHODS) == method.fast


@pytest.mark.parametrize("method", sorted(SMALL))
def test_the_loop_with_a_callback_sees_every_level_and_leaves_the_sample_alone(method, key):
  """A callback returning None changes nothing (the same bits as get_sampler); it is called once per level,
  in order, with non-increasing times (ALD stays at a level for its Langevin steps) and the sample of that
  level."""
  sde = all_sdes(50)[1]
  score = example_mixture(2).score_fn(sde)
  shape = (8, 2)
  stepper = samplers.get_stepper(sde, shape, method, **SMALL[method])
  seen = []

  def callback(k, x, t, denoised):
    jax.debug.callback(lambda k, t, x: seen.append((int(k), float(t), np.asarray(x))), k, t, x)

  x_cb, nfe = jax.jit(lambda k: samplers.run(stepper, k, score, callback=callback))(key)
  sample_fn = samplers.get_sampler(sde, shape, method, **SMALL[method])
  x_ref, nfe_ref = jax.jit(lambda k: sample_fn(k, score))(key)
  np.testing.assert_array_equal(x_cb, x_ref)
  assert int(nfe) == int(nfe_ref) == stepper.nfe
  levels = [k for k, _, _ in seen]
  first = stepper.start if stepper.start > 0 else 1
  assert levels == list(range(first, stepper.stop + 1))
  times = [t for _, t, _ in seen]
  assert all(a >= b for a, b in zip(times, times[1:])) and times[0] > times[-1]
  assert all(np.all(np.isfinite(x)) for _, _, x in seen)


def test_a_callback_can_condition_the_sample(key):
  """Replacement conditioning written as a callback: the observed coordinate follows its noise-free forward
  path at every level, and the denoised sample ends there. (Multistep methods keep the denoised predictions
  made before a replacement in their history, so their last step pulls away from it.)"""
  sde = all_sdes(50)[1]
  score = example_mixture(2).score_fn(sde)
  stepper = samplers.get_stepper(sde, (16, 2), "pc", num_steps=20)

  def pin(k, x, t, denoised):
    a, _ = sde.marginal_coefs(t)
    return x.at[:, 0].set(a * 1.5)                       # the noise-free forward path of x0 = 1.5

  x, _ = jax.jit(lambda k: samplers.run(stepper, k, score, callback=pin))(key)
  assert np.allclose(np.asarray(x)[:, 0], 1.5, atol=0.05)


def _rotation(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s], [s, c]])


def test_observations_know_whether_they_are_projectors():
  R = _rotation(0.7)
  assert samplers.observation_from_matrix(R[:1]).projector
  assert samplers.mask_observation(jnp.ones((4, 2))).projector and samplers.colour_observation().projector
  assert not samplers.observation_from_matrix(2.0 * R[:1]).projector
  x = jax.random.normal(jax.random.key(1), (5, 2))
  obs = samplers.observation_from_matrix(R[:1])
  np.testing.assert_allclose(obs.forward(obs.replace_observed(x, jnp.full((5, 1), 0.3))), 0.3, atol=1e-6)
  with pytest.raises(ValueError, match="needs a noise-free observation"):
    samplers.get_inverse_solver(all_sdes()[1], (4, 2), samplers.observation_from_matrix(R[:1], 0.1), "replacement")


N = 2048
TOLERANCE = 1.5             # as test_samplers: within 1.5x the 99% noise floor of an exact sample


@pytest.mark.parametrize("sde", all_sdes()[1:2], ids=["vp"])
@pytest.mark.slow
def test_smc_samples_the_exact_conditional_of_a_rotated_observation(sde, key):
  """A projection onto a rotated axis, u0 = R[0] x = 0: the particle sampler's other axis u1 = R[1] x follows
  the exact conditional of the rotated mixture (the oracle: rotate the components, condition on u0; the mode
  weights move from 0.6 / 0.4 to 0.75 / 0.25)."""
  g = GaussianMixture([0.6, 0.4], [[0.0, -3.0], [0.0, 3.0]], [[1.0, 0.25], [0.5, 0.36]])
  R = _rotation(0.5)
  covs = np.stack([np.diag(c) for c in ([1.0, 0.25], [0.5, 0.36])])
  rotated = GaussianMixture([0.6, 0.4], np.array([[0.0, -3.0], [0.0, 3.0]]) @ R.T, R @ covs @ R.T)
  target = rotated.condition(np.array([True, False]), np.array([0.0, 0.0]))
  floor = target.metric_floor(jax.random.key(11), N)
  solve = samplers.get_inverse_solver(sde, (N, 2), samplers.observation_from_matrix(R[:1]), "smc", "pc",
                                      n_particles=32, num_steps=200)
  x, nfe = jax.jit(lambda k: solve(k, g.score_fn(sde), jnp.zeros((N, 1))))(key)
  u = np.asarray(x) @ R.T
  np.testing.assert_allclose(u[:, 0], 0.0, atol=1e-5)
  for name, value in target.mode_metrics(u[:, 1:]).items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])
  assert int(nfe) == 32 * 201                                       # network evaluations: every particle's
  # The test can fail: replacement, which ignores how likely the observation is, misses the weights.
  biased = samplers.get_inverse_solver(sde, (N, 2), samplers.observation_from_matrix(R[:1]), "replacement", "pc",
                                       num_steps=200)
  x, _ = jax.jit(lambda k: biased(k, g.score_fn(sde), jnp.zeros((N, 1))))(key)
  assert target.mode_metrics((np.asarray(x) @ R.T)[:, 1:])["tv"] > 3 * floor["tv"]
