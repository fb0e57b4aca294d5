"""The adaptive reverse-SDE sampler (``method="sde_adaptive"``, Jolicoeur-Martineau et al. 2021, Alg. 1) on the
oracle: it recovers the mixture on every SDE, a tighter tolerance spends more score evaluations, the reported
NFE is the executed count, a sample does not depend on its batch-mates, bad options give one line, and the
printed algorithm's fresh draw after a rejection is biased in 2-D (why ``rejection="bridge"`` is the default).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from tests.conftest import EvaluationCounter, ORACLE_SAMPLES, SDE_IDS, all_sdes

N_SAMPLES = ORACLE_SAMPLES
TOLERANCE = 1.5          # within 1.5x the 99% noise floor of an exact sample, as tests/test_samplers.py



def _sample(sde, score_fn, key, shape=(N_SAMPLES, 2), **options):
  sample_fn = samplers.get_sampler(sde, shape, "sde_adaptive", **options)
  return jax.jit(sample_fn, static_argnums=1)(key, score_fn)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_recovers_the_mixture_and_reports_its_nfe(sde, mixture, floor, key):
  x, nfe = _sample(sde, mixture.score_fn(sde), key)
  for name, value in mixture.mode_metrics(x).items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])
  # 2 evaluations per attempted step + the denoising step: odd, and far below a fixed 1000-step grid's 2001
  assert int(nfe) % 2 == 1 and 3 <= int(nfe) <= 1500


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.slow
def test_one_step_for_the_batch_recovers_the_mixture_in_fewer_evaluations(sde, mixture, floor, key):
  """control="batch": E over the whole batch sets one step for every sample. The mixture is recovered as with
  per-sample steps, and the loop ends when the batch does, not after the slowest of its samples."""
  x, nfe = _sample(sde, mixture.score_fn(sde), key, rtol=0.05, control="batch")
  for name, value in mixture.mode_metrics(x).items():
    assert value <= TOLERANCE * floor[name], (name, value, floor[name])
  _, nfe_sample = _sample(sde, mixture.score_fn(sde), key, rtol=0.05)
  assert int(nfe) < int(nfe_sample), (int(nfe), int(nfe_sample))


def test_one_sample_steps_alike_under_either_control(key):
  """With a batch of one the batch's error is the sample's: both controls take the same steps, to the bit."""
  sde = all_sdes()[1]
  score_fn = _gaussian_score(sde)
  a, nfe_a = _sample(sde, score_fn, key, shape=(1, 3), rtol=0.05)
  b, nfe_b = _sample(sde, score_fn, key, shape=(1, 3), rtol=0.05, control="batch")
  np.testing.assert_array_equal(a, b)
  assert int(nfe_a) == int(nfe_b)


@pytest.mark.slow
def test_a_fresh_draw_after_a_rejection_biases_the_mode_weights(mixture, floor, key):
  """Alg. 1 as printed redraws the increment after a rejection; the accepted ones are then the small ones, and on
  VE the mode weights move far outside the noise floor (measured 5-7x; the bridge default: 0.5-0.7x)."""
  sde = all_sdes()[0]
  x, _ = _sample(sde, mixture.score_fn(sde), key, rejection="fresh")
  assert mixture.mode_metrics(x)["tv"] > 3 * floor["tv"]


def test_a_tighter_tolerance_spends_more_evaluations(mixture, key):
  sde = all_sdes()[1]
  nfes = [int(_sample(sde, mixture.score_fn(sde), key, shape=(64, 2), rtol=rtol)[1]) for rtol in (0.2, 0.05, 0.01)]
  assert nfes[0] < nfes[1] < nfes[2], nfes


@pytest.mark.parametrize("denoise", [True, False])
def test_reported_nfe_equals_executed_score_evaluations(denoise, mixture, key):
  sde = all_sdes()[2]
  counter = EvaluationCounter()
  sample_fn = samplers.get_sampler(sde, (64, 2), "sde_adaptive", rtol=0.1, denoise=denoise)
  x, nfe = jax.jit(lambda k: sample_fn(k, counter.wrap(mixture.score_fn(sde))))(key)
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert counter.count == int(nfe) > 2
  assert int(nfe) % 2 == int(denoise)


def _gaussian_score(sde, mean=1.5, std=0.5):
  """The exact score of N(mean, std^2 I) data perturbed by ``sde``, elementwise in the batch: its rounding does
  not depend on the batch size (the mixture's matrix products do, and an adaptive step's accept decision can
  turn a last-bit difference into another path)."""

  def score_fn(x, t):
    a, s = sde.marginal_coefs(t)
    a, s = a[:, None], s[:, None]
    return -(x - a * mean) / (jnp.square(a * std) + jnp.square(s))

  return score_fn


def test_samples_do_not_depend_on_their_batch_mates(key):
  """Per-sample t, h, Brownian memory and noise stream: sample b is the same, to the bit, in a batch of 8, of 16
  and (b < 2) of 2, though the batches stop after different numbers of loop iterations."""
  sde = all_sdes()[0]
  score_fn = _gaussian_score(sde)
  a, nfe_a = _sample(sde, score_fn, key, shape=(8, 2), rtol=0.05)
  c, nfe_c = _sample(sde, score_fn, key, shape=(16, 2), rtol=0.05)
  one, nfe_one = _sample(sde, score_fn, key, shape=(2, 2), rtol=0.05)
  d, _ = _sample(sde, score_fn, jax.random.key(9), shape=(8, 2), rtol=0.05)
  np.testing.assert_array_equal(a, c[:8])
  np.testing.assert_array_equal(one, a[:2])
  assert int(nfe_one) <= int(nfe_a) <= int(nfe_c)          # the slowest sample of a larger batch
  assert not np.allclose(a, d)


def test_running_out_of_steps_raises(mixture, key):
  sde = all_sdes()[1]
  with pytest.raises(Exception, match="max_steps=3"):
    jax.block_until_ready(_sample(sde, mixture.score_fn(sde), key, shape=(4, 2), max_steps=3))


@pytest.mark.parametrize("options, match", [
    (dict(rtol=0.0), r"^rtol must be > 0, got 0.0$"),
    (dict(atol=-1e-3), r"^atol must be > 0, got -0.001$"),
    (dict(theta=1.5), r"^theta must be > 0 and <= 1, got 1.5$"),
    (dict(r=0.0), r"^r must be > 0, got 0.0$"),
    (dict(h_init=float("nan")), r"^h_init must be a finite number, got nan$"),
    (dict(max_steps=0), r"^max_steps must be an integer >= 1, got 0$"),
    (dict(t_min=1.0), r"^t_min must be > 0 and < 1, got 1.0$"),
    (dict(rejection="resample"), r"^rejection must be one of \['bridge', 'fresh'\], got 'resample'$"),
    (dict(control="device"), r"^control must be one of \['sample', 'batch'\], got 'device'$"),
    (dict(num_steps=10), r"^unknown option\(s\) \['num_steps'\] for method 'sde_adaptive'"),
])
def test_bad_options_give_one_line(options, match):
  with pytest.raises(ValueError, match=match) as info:
    samplers.get_sampler(all_sdes()[0], (8, 2), "sde_adaptive", **options)
  assert "\n" not in str(info.value)


def test_the_reference_codes_option_names_are_aliases(mixture, key):
  """score_sde_fast_sampling's reltol / abstol / safety / exp / eps name rtol / atol / theta / r / t_min."""
  sde = all_sdes()[0]
  old = dict(reltol=0.1, abstol=0.01, safety=0.8, exp=0.5, eps=1e-2)
  new = dict(rtol=0.1, atol=0.01, theta=0.8, r=0.5, t_min=1e-2)
  a, nfe_a = _sample(sde, mixture.score_fn(sde), key, shape=(8, 2), **old)
  b, nfe_b = _sample(sde, mixture.score_fn(sde), key, shape=(8, 2), **new)
  np.testing.assert_array_equal(a, b)
  assert int(nfe_a) == int(nfe_b)
