"""Every sampler, driven by the oracle's exact score, must reproduce the mixture to sampling noise."""

import functools

import diffrax  # noqa: F401  (imported for its side effect of registering pytrees early)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import samplers
from datasets import example_mixture
from tests.conftest import SDE_IDS, all_sdes

N_SAMPLES = 4096
TOLERANCE = 1.5          # the project's target: within 1.5x the noise floor of an exact sample


@pytest.fixture(scope="module")
def mixture():
  return example_mixture(2)


@pytest.fixture(scope="module")
def floor(mixture):
  """99th percentile of each metric over 200 exact samples of the same size."""
  return mixture.metric_floor(jax.random.key(123), N_SAMPLES)


CASES = {
    "pc_reverse_diffusion_langevin": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", N=1000), None),
    "pc_langevin_expected_step": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", N=1000,
                                             langevin_step="expected"), None),
    "pc_euler_maruyama": ("pc", dict(predictor="euler_maruyama", corrector="none", N=1000), None),
    "pc_ancestral": ("pc", dict(predictor="ancestral_sampling", corrector="none", N=1000), None),
    "pc_probability_flow": ("pc", dict(predictor="reverse_diffusion", corrector="none", N=1000,
                                       probability_flow=True), None),
    "ode_tsit5": ("ode", dict(rtol=1e-5, atol=1e-5), None),
    "edm_heun": ("edm_heun", dict(N=18), 35),
    "dpm_solver_pp": ("dpm_solver_pp", dict(N=20), 20),
    "annealed_langevin": ("ald", dict(n_levels=100, n_steps=50), None),
}


def _sample(sde, method, options, key, score_fn, shape=(N_SAMPLES, 2)):
  sample_fn = samplers.get_sampler(sde, shape, method, **options)
  return jax.jit(sample_fn, static_argnums=1)(key, score_fn)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral_sampling"])
def test_ladder_sampler_recovers_the_mixture_from_the_ladder_score(sde, predictor, mixture, floor, key):
  """A discrete-ladder model sampled on its own ladder (score_sde's way): with the exact score of each
  ladder level (VP's a_i differ from a(t_i) by up to 3.3%), the mixture comes back to sampling noise,
  and the network is only ever asked about ladder times."""
  seen = []

  def record(t):
    seen.append(np.asarray(t))
    return t

  exact = mixture.score_fn(sde, discrete=True)
  score_fn = lambda x, t: exact(x, io_callback(record, jax.ShapeDtypeStruct(t.shape, t.dtype), t))
  x, nfe = _sample(sde, "pc", dict(predictor=predictor, corrector="none", ladder=True), key, score_fn)
  metrics = mixture.mode_metrics(x)
  for name, value in metrics.items():
    assert value <= TOLERANCE * floor[name], (predictor, name, value, floor[name])
  times = np.concatenate([t[:1] for t in seen])
  assert int(nfe) == sde.N == len(times)
  np.testing.assert_allclose(times, np.arange(sde.N - 1, -1, -1) / (sde.N - 1), atol=1e-6)
  with pytest.raises(ValueError, match="ladder"):
    samplers.get_sampler(sde, (4, 2), "pc", predictor="euler_maruyama", ladder=True)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_sampler_recovers_the_mixture(sde, case, mixture, floor, key):
  method, options, max_nfe = CASES[case]
  x, nfe = _sample(sde, method, options, key, mixture.score_fn(sde))
  metrics = mixture.mode_metrics(x)
  for name, value in metrics.items():
    assert value <= TOLERANCE * floor[name], (case, name, value, floor[name])
  if max_nfe is not None:
    assert int(nfe) <= max_nfe


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_plain_langevin_gets_the_weights_wrong(sde, mixture, floor, key):
  """Seeds 000/003: Langevin at one small noise level from the prior cannot move mass between modes."""
  x, _ = _sample(sde, "ald", dict(n_levels=1, n_steps=1000), key, mixture.score_fn(sde))
  assert mixture.mode_metrics(x)["tv"] > 3 * floor["tv"]


DETERMINISTIC_IN_BATCH = {
    "edm_heun": dict(N=6), "edm_heun_churn": dict(N=6, S_churn=10.0), "dpm_solver_pp": dict(N=6),
    "ode": dict(solver="heun", n_steps=8), "ald": dict(n_levels=3, n_steps=4),
    "pc": dict(predictor="ancestral_sampling", corrector="langevin", N=8, langevin_step="expected"),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC_IN_BATCH))
def test_same_key_same_samples_whatever_the_batch(name, mixture, key):
  sde = all_sdes()[1]
  method = name.replace("_churn", "")
  options = DETERMINISTIC_IN_BATCH[name]
  score_fn = mixture.score_fn(sde)
  a, _ = _sample(sde, method, options, key, score_fn, shape=(8, 2))
  b, _ = _sample(sde, method, options, key, score_fn, shape=(8, 2))
  c, _ = _sample(sde, method, options, key, score_fn, shape=(16, 2))
  d, _ = _sample(sde, method, options, jax.random.key(9), score_fn, shape=(8, 2))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, c[:8], rtol=1e-5, atol=1e-5)
  assert not np.allclose(a, d)


def test_batch_averaged_langevin_couples_a_sample_to_its_batch(mixture, key):
  """score_sde's default step averages norms over the batch: documented, and what 'expected' avoids."""
  sde = all_sdes()[0]
  options = dict(predictor="none", corrector="langevin", N=4)
  a, _ = _sample(sde, "pc", options, key, mixture.score_fn(sde), shape=(8, 2))
  c, _ = _sample(sde, "pc", options, key, mixture.score_fn(sde), shape=(16, 2))
  assert not np.allclose(a, c[:8], rtol=1e-4)


class _Counter:
  """Counts score evaluations as they execute (not as they are traced)."""

  def __init__(self):
    self.count = 0

  def _inc(self):
    self.count += 1
    return np.int32(0)

  def wrap(self, fn):
    def counted(*args):
      token = io_callback(self._inc, jax.ShapeDtypeStruct((), jnp.int32), ordered=True)
      return jax.tree.map(lambda v: v + 0 * token, fn(*args))
    return counted


NFE_CASES = {
    "pc": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", N=5, n_steps=2)),
    "pc_no_denoise": ("pc", dict(predictor="euler_maruyama", corrector="ald", N=4, denoise=False)),
    "ode_adaptive": ("ode", dict(rtol=1e-4, atol=1e-4)),
    "ode_dopri5": ("ode", dict(solver="dopri5", rtol=1e-3, atol=1e-3)),
    "ode_bosh3": ("ode", dict(solver="bosh3", rtol=1e-3, atol=1e-3)),
    "ode_heun_adaptive": ("ode", dict(solver="heun", rtol=1e-3, atol=1e-3)),
    "ode_euler_fixed": ("ode", dict(solver="euler", n_steps=7)),
    "ode_tsit5_fixed": ("ode", dict(solver="tsit5", n_steps=3, denoise=False)),
    "edm_heun": ("edm_heun", dict(N=5)),
    "edm_heun_churn": ("edm_heun", dict(N=4, S_churn=5.0)),
    "dpm_solver_pp": ("dpm_solver_pp", dict(N=5)),
    "ald": ("ald", dict(n_levels=2, n_steps=3)),
}


@pytest.mark.parametrize("name", list(NFE_CASES))
def test_reported_nfe_equals_executed_score_evaluations(name, mixture, key):
  sde = all_sdes()[2]
  method, options = NFE_CASES[name]
  counter = _Counter()
  sample_fn = samplers.get_sampler(sde, (64, 2), method, **options)
  x, nfe = jax.jit(lambda k: sample_fn(k, counter.wrap(mixture.score_fn(sde))))(key)
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert counter.count == int(nfe) > 0


def test_registries_are_extensible(mixture, key):
  sde = all_sdes()[1]

  @samplers.register_predictor("test_em_copy")
  def em_copy(*args):
    return samplers.PREDICTORS["euler_maruyama"].fn(*args)

  try:
    options = dict(corrector="none", N=20)
    a, _ = _sample(sde, "pc", dict(options, predictor="test_em_copy"), key, mixture.score_fn(sde), (32, 2))
    b, _ = _sample(sde, "pc", dict(options, predictor="euler_maruyama"), key, mixture.score_fn(sde), (32, 2))
    np.testing.assert_array_equal(a, b)
  finally:
    samplers.PREDICTORS.pop("test_em_copy")


@pytest.mark.parametrize("method, options, match", [
    ("heun_sde", {}, r"method must be one of \['ald', 'dpm_solver_pp', 'edm_heun', 'ode', 'pc'\]"),
    ("pc", dict(predictor="ddim"), r"predictor must be one of \['ancestral_sampling', 'euler_maruyama', 'none', 'reverse_diffusion'\]"),
    ("pc", dict(corrector="hmc"), r"corrector must be one of \['ald', 'langevin', 'none'\]"),
    ("pc", dict(snr=0.0), "snr must be"),
    ("pc", dict(snr=-1.0), "snr must be"),
    ("pc", dict(N=0), "N must be"),
    ("pc", dict(eps=0.0), r"eps must lie in \(0, T=1.0\)"),
    ("ode", dict(eps=1.5), "eps must lie"),
    ("pc", dict(predictor="ancestral_sampling", probability_flow=True), "no probability-flow form"),
    ("pc", dict(langevin_step="per_sample"), "langevin_step must be one of"),
    ("ode", dict(solver="rk4"), "solver must be one of"),
    ("ode", dict(solver="euler"), "has no error estimate"),
    ("edm_heun", dict(N=1), "N must be >= 2"),
    ("dpm_solver_pp", dict(grid="cosine"), "grid must be one of"),
    ("edm_heun", dict(n_steps=3), r"unknown option\(s\) \['n_steps'\] for method 'edm_heun'"),
])
def test_bad_options_raise_clear_errors(method, options, match):
  with pytest.raises(ValueError, match=match):
    samplers.get_sampler(all_sdes()[0], (8, 2), method, **options)


@pytest.mark.parametrize("shape", [(8,), (), (0, 2), (8, 2.0)])
def test_shape_without_batch_raises(shape):
  with pytest.raises(ValueError, match="shape must be"):
    samplers.get_sampler(all_sdes()[0], shape, "pc")
