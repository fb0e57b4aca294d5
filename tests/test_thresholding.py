"""Thresholding of the data prediction x0 = D(x, t) in EDM Heun, DPM-Solver++ and UniPC (Saharia et al. 2022
sec. 2.3; Lu et al. 2022b sec. 5): static and dynamic keep every x0 (and the denoised sample) in the data range,
dynamic is Saharia's formula, "none" is the unthresholded sampler bit for bit, bad options fail in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from samplers import common, steps

METHODS = ("edm_heun", "dpm_solver_pp", "unipc")
SHAPE = (8, 4, 4, 1)


def _gaussian_score(sde, mu=1.5, c=0.8):
  """The exact score of data N(mu, c^2 I) (closed form: x(t) ~ N(a mu, a^2 c^2 + s^2)). Its x0 lies mostly
  above 1, so an unthresholded sampler leaves the range [0, 1] (checked)."""
  def score_fn(x, t):
    a, s = sde.marginal_coefs(t)
    a, s = sde_lib.batch_broadcast(a, x), sde_lib.batch_broadcast(s, x)
    return -(x - a * mu) / (a**2 * c**2 + s**2)
  return score_fn


def _run(method, key, score_fn, sde, **options):
  """(sample, every data prediction the loop saw) of ``method`` at 12 NFE."""
  seen = []
  stepper = samplers.get_stepper(sde, SHAPE, method, nfe=12, **options)

  def callback(k, x, t, denoised):
    jax.debug.callback(lambda d: seen.append(np.asarray(d)), denoised)

  x, _ = jax.jit(lambda k: steps.run(stepper, k, score_fn, callback=callback))(key)
  jax.effects_barrier()
  return np.asarray(x), np.stack(seen)


@pytest.mark.parametrize("method", METHODS)
def test_static_and_dynamic_keep_every_data_prediction_and_the_denoised_sample_in_range(method, key):
  sde = sde_lib.VPSDE()
  score_fn = _gaussian_score(sde)
  lo, hi = 0.0, 1.0
  options = dict(s_churn=10.0) if method == "edm_heun" else {}
  x, x0 = _run(method, key, score_fn, sde, data_min=lo, data_max=hi, **options)
  assert x.max() > hi + 0.2 and x0.max() > hi + 0.2          # not vacuous: unthresholded, both leave the range
  for thresholding in ("static", "dynamic"):
    x, x0 = _run(method, key, score_fn, sde, thresholding=thresholding, data_min=lo, data_max=hi, **options)
    assert lo <= x0.min() and x0.max() <= hi, (thresholding, x0.min(), x0.max())
    assert lo <= x.min() and x.max() <= hi, (thresholding, x.min(), x.max())   # denoise: the last step lands on x0


def _saharia(x0, p, lo=-1.0, hi=1.0):
  """numpy reference: Saharia et al. 2022 sec. 2.3 (s = the p-quantile of |x0| per sample, s = max(s, 1),
  x0 = clip(x0, -s, s) / s), on [lo, hi] about its centre with half-width r."""
  c, r = (lo + hi) / 2, (hi - lo) / 2
  z = np.asarray(x0, np.float64) - c
  s = np.maximum(np.quantile(np.abs(z.reshape(len(z), -1)), p, axis=1), r).reshape((-1,) + (1,) * (z.ndim - 1))
  return c + np.clip(z, -s, s) / s * r


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 1.0)])
@pytest.mark.parametrize("p", [0.995, 0.9, 1.0])
def test_dynamic_thresholding_is_saharias_formula(lo, hi, p, key):
  # Scales 0.05 .. 3 per sample: some samples' quantile is inside the range (only clipped), some beyond (shrunk).
  scale = jnp.linspace(0.05, 3.0, 16)[:, None, None, None]
  x0 = (lo + hi) / 2 + scale * jax.random.normal(key, (16, 8, 8, 3))
  got = np.asarray(common.dynamic_threshold(x0, lo, hi, p))
  np.testing.assert_allclose(got, _saharia(x0, p, lo, hi), rtol=1e-5, atol=1e-6)
  assert lo <= got.min() and got.max() <= hi
  inside = np.quantile(np.abs(np.asarray(x0) - (lo + hi) / 2).reshape(16, -1), p, axis=1) <= (hi - lo) / 2
  assert inside.any() and (~inside).any()                      # both branches of max(s, r) taken
  np.testing.assert_array_equal(np.asarray(common.static_threshold(x0, lo, hi)), np.clip(np.asarray(x0), lo, hi))


@pytest.mark.parametrize("method", METHODS)
def test_none_is_the_unthresholded_sampler_bit_for_bit(method, key):
  """"none" runs today's code path (no correction), to the bit; a static range no x0 reaches changes nothing
  beyond float32 rounding, so the thresholding plumbing itself leaves every other operation alone. (Its
  program holds a clip the other lacks, and XLA may fuse the two programs' arithmetic differently: with
  XLA:CPU's loop emitter, as scripts/test_env.sh compiles, they differ in the last bits: 1e-6 at most here.)"""
  sde = sde_lib.VPSDE()
  score_fn = _gaussian_score(sde)

  def sample(**options):
    fn = samplers.get_sampler(sde, SHAPE, method, nfe=12, **options)
    return np.asarray(jax.jit(lambda k: fn(k, score_fn))(key)[0])

  none = sample()
  np.testing.assert_array_equal(none, sample(thresholding="none", data_min=0.0, data_max=1.0))
  np.testing.assert_allclose(sample(thresholding="static", data_min=-1e30, data_max=1e30), none, rtol=1e-5,
                             atol=1e-5)
  assert samplers.get_options(method).thresholding == "none"   # the library default


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("options,match", [
    (dict(thresholding="clip"), "thresholding must be one of"),
    (dict(data_min=1.0, data_max=1.0), "data_min must be < data_max"),
    (dict(data_min=float("nan")), "data_min must be a finite number"),
    (dict(threshold_percentile=0.0), "threshold_percentile must be"),
    (dict(threshold_percentile=1.5), "threshold_percentile must be"),
])
def test_bad_thresholding_options_fail_in_one_line(method, options, match):
  with pytest.raises(ValueError, match=match) as err:
    samplers.get_sampler(sde_lib.VPSDE(), SHAPE, method, **options)
  assert "\n" not in str(err.value)
