"""The guidance interval (Kynkäänniemi et al. 2024) against the oracle: guidance only where sigma(t) lies in
(sigma_lo, sigma_hi], the conditional score (scale 1) elsewhere; None is guidance everywhere, unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from data_lib import GaussianMixture
from samplers import guidance
from tests.conftest import SDE_IDS, all_sdes

# The benchmark's mixture (benchmarks/conditional/guidance_interval_gmm.py): class A = components (0, 1), modes at
# -4 and +1 (within-class weights 0.7 / 0.3); A's small mode at +1 lies on class B's side.
MIXTURE = GaussianMixture([0.35, 0.15, 0.15, 0.35], [[-4.0], [1.0], [-1.0], [4.0]], [[0.25], [0.16], [0.16], [0.25]])
CLASS = (0, 1)
TOLERANCE = 1.5             # as test_controllable: within 1.5x the 99% noise floor of an exact sample
N = 4096


def _class_ll(sde):
  return lambda x, t: MIXTURE.class_log_likelihood_t(x, t, sde, CLASS)


def _cfg(process, scale, **kw):
  return guidance.classifier_free_score_fn(MIXTURE.restrict(CLASS).score_fn(process), MIXTURE.score_fn(process), scale,
                                           **kw)


def _points(sde, key, n=64):
  """x [n, 1] spread over the data and times t [n] whose sigma(t) spans the SDE's range."""
  return 6 * jax.random.normal(key, (n, 1)), jnp.linspace(1e-3, 1.0, n)


@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_no_interval_is_todays_guidance_bit_for_bit(scale, key):
  sde = all_sdes()[1]
  x, t = _points(sde, key)
  grad = jax.grad(lambda x, t: jnp.sum(_class_ll(sde)(x, t)))
  score, cond = MIXTURE.score_fn(sde), MIXTURE.restrict(CLASS).score_fn(sde)
  np.testing.assert_array_equal(guidance.guided_score_fn(score, _class_ll(sde), scale, interval=None)(x, t),
                                score(x, t) + scale * grad(x, t))
  expected = score(x, t) + scale * (cond(x, t) - score(x, t)) if scale else score(x, t)
  np.testing.assert_array_equal(_cfg(sde, scale, interval=None)(x, t), expected)
  assert guidance.classifier_free_score_fn(cond, score, 1.0, interval=(0.1, 1.0), sde=sde) is cond
  assert guidance.classifier_free_score_fn(cond, score, 0.0) is score


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_inside_the_interval_guided_outside_the_conditional_score_exactly(sde, key):
  """Rows with sigma_lo < sigma(t) <= sigma_hi get the guided score, the others the unguided conditional one
  (scale 1: the exact class-conditional score), bit for bit; sigma(t) = sigma_hi is inside, sigma_lo outside.
  Op by op (eager; for classifier-free guidance under disable_jit, so its lax.cond runs the branch eagerly):
  compiled fusion cannot blur a wrong formula."""
  x, t = _points(sde, key, 40)
  sigma = np.asarray(sde.sigma(t))
  lo, hi = float(sigma[12]), float(sigma[28])
  inside = (sigma > lo) & (sigma <= hi)
  assert inside[28] and not inside[12] and 0 < inside.sum() < len(t)
  scale = 3.0
  score = MIXTURE.score_fn(sde)
  guided = guidance.guided_score_fn(score, _class_ll(sde), scale)(x, t)
  unguided = guidance.guided_score_fn(score, _class_ll(sde), 1.0)(x, t)
  got = guidance.guided_score_fn(score, _class_ll(sde), scale, interval=(lo, hi), sde=sde)(x, t)
  np.testing.assert_array_equal(got[inside], guided[inside])
  np.testing.assert_array_equal(got[~inside], unguided[~inside])
  assert np.max(np.abs(guided[inside] - unguided[inside])) > 0.1                   # the two really differ there
  cond = MIXTURE.restrict(CLASS).score_fn(sde)(x, t)
  np.testing.assert_allclose(got[~inside], cond[~inside], rtol=2e-4, atol=2e-4)    # Bayes: the class's own score
  with jax.disable_jit():
    got = _cfg(sde, scale, interval=(lo, hi), sde=sde)(x, t)
    np.testing.assert_array_equal(got[inside], _cfg(sde, scale)(x, t)[inside])
    np.testing.assert_array_equal(got[~inside], cond[~inside])
    # No row inside: the unconditional call is skipped (lax.cond) and the result is the conditional score.
    np.testing.assert_array_equal(_cfg(sde, scale, interval=(hi, 2 * hi + 1), sde=sde)(x[:12], t[:12]), cond[:12])


BAD_INTERVALS = [(1.0, 0.5), (0.5, 0.5), (-0.1, 1.0), (0.1,), (0.1, 1.0, 2.0), 5.0, "0.1,1", (0.1, float("nan")),
                 (True, 2.0), (float("inf"), float("inf"))]


@pytest.mark.parametrize("bad", BAD_INTERVALS)
def test_bad_intervals_raise_one_line_naming_the_range(bad):
  sde = all_sdes()[0]
  for build in (lambda: guidance.guided_score_fn(MIXTURE.score_fn(sde), _class_ll(sde), 2.0, interval=bad, sde=sde),
                lambda: _cfg(sde, 2.0, interval=bad, sde=sde)):
    with pytest.raises(ValueError, match=r"^interval must be None or a pair \(sigma_lo, sigma_hi\) .*0 <= sigma_lo < "
                                         r"sigma_hi <= inf, got") as e:
      build()
    assert "\n" not in str(e.value)


def test_an_interval_needs_the_sde():
  sde = all_sdes()[0]
  with pytest.raises(ValueError, match=r"^guided_score_fn: a guidance interval needs sde .*got sde=None$"):
    guidance.guided_score_fn(MIXTURE.score_fn(sde), _class_ll(sde), 2.0, interval=(0.1, 1.0))
  with pytest.raises(ValueError, match=r"^classifier_free_score_fn: a guidance interval needs sde"):
    _cfg(sde, 2.0, interval=(0.1, 1.0))
  guidance.guided_score_fn(MIXTURE.score_fn(sde), _class_ll(sde), 2.0, interval=(0.0, float("inf")), sde=sde)


def test_the_interval_keeps_the_mode_guidance_everywhere_drops(key):
  """VP, classifier-free guidance at scale 2, DPM-Solver++ 21 NFE: everywhere, A's small mode at +1 (exact weight 0.3)
  loses mass far beyond sampling noise (its TV over the 99% floor of exact samples); in (0, 1] the within-class mode
  weights stay within 1.5x that floor (benchmarks/results/guidance_interval_gmm.md)."""
  sde = sde_lib.VPSDE(0.1, 20.0, 1000)
  target = MIXTURE.restrict(CLASS)
  floor = target.metric_floor(jax.random.key(1), N)["tv"]
  fn = samplers.get_sampler(sde, (N, 1), "dpm_solver_pp", num_steps=20)
  x_interval, nfe = jax.jit(lambda k: fn(k, _cfg(sde, 2.0, interval=(0.0, 1.0), sde=sde)))(key)
  x_everywhere, _ = jax.jit(lambda k: fn(k, _cfg(sde, 2.0)))(key)
  tv_interval, tv_everywhere = target.mode_metrics(x_interval)["tv"], target.mode_metrics(x_everywhere)["tv"]
  assert int(nfe) == 21
  assert tv_interval <= TOLERANCE * floor, (tv_interval, floor)
  assert tv_everywhere > TOLERANCE * floor, (tv_everywhere, floor)


# ------------------------------------------------------------------------- the config field
def test_the_config_field_parses_from_the_command_line_and_checks_its_range():
  """--config.sampling.guidance_interval=0.3,5.0 on the locked base config reaches the typed section as a pair;
  the default () is guidance everywhere (None); a bad pair is a one-line error naming the field."""
  from absl import flags
  from ml_collections import config_flags

  from schema import parse_config

  def parsed(*overrides):                    # as main.py defines --config, on its own flag set and argv
    argv = ["main.py", "--config=configs/vp/digits.py", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values

  for arg, want in [("0.3,5.0", (0.3, 5.0)), ("(0.3, 5)", (0.3, 5.0)), ("()", None)]:
    assert parse_config(parsed(f"--config.sampling.guidance_interval={arg}").config).sampling.guidance_interval == want
  values = parsed()
  assert values.config.sampling.guidance_interval == () and parse_config(values.config).sampling.guidance_interval is None
  values.config.sampling.guidance_interval = (5.0, 0.3)
  with pytest.raises(ValueError, match=r"^sampling\.guidance_interval must be None or a pair \(sigma_lo, sigma_hi\)"):
    parse_config(values.config)


@pytest.mark.slow
def test_main_samples_classes_with_a_guidance_interval(tmp_path):
  """--mode sample --config.sampling.condition=class with an interval: the json records it; a bad one exits 2 with
  the field's one-line message."""
  import json

  from tests.test_pipeline import run_main, tiny_flags

  flags = tiny_flags(tmp_path, 2) + ["--config.model.num_classes=10"]
  assert run_main(flags + ["--mode=train"]).returncode == 0
  sample = flags + ["--mode=sample", "--config.sampling.condition=class", "--config.sampling.guidance_scale=2",
                    "--config.sampling.method=dpm_solver_pp", "--config.sampling.dpm_solver_pp.num_steps=3",
                    "--config.eval.num_samples=10", "--config.eval.batch_size=10"]
  done = run_main(sample + ["--config.sampling.guidance_interval=0.3,5.0"])
  assert done.returncode == 0, done.stderr[-2000:]
  with open(tmp_path / "samples" / "class_step_2.json") as f:
    metrics = json.load(f)
  assert metrics["guidance_interval"] == [0.3, 5.0] and metrics["guidance_scale"] == 2.0 and metrics["nfe"] == 4
  bad = run_main(sample + ["--config.sampling.guidance_interval=5.0,0.3"])
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 2 and "sampling.guidance_interval must be None or a pair" in last, last
