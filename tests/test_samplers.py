"""Every sampler, driven by the oracle's exact score, must reproduce the mixture to sampling noise."""

import functools

import diffrax  # noqa: F401  (imported for its side effect of registering pytrees early)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import samplers
from tests.conftest import EvaluationCounter, ORACLE_SAMPLES, SDE_IDS, all_sdes

N_SAMPLES = ORACLE_SAMPLES
TOLERANCE = 1.5          # the project's target: within 1.5x the noise floor of an exact sample



CASES = {
    "pc_reverse_diffusion_langevin": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", num_steps=1000), None),
    "pc_langevin_expected_step": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", num_steps=1000,
                                             langevin_step_rule="expected"), None),
    "pc_euler_maruyama": ("pc", dict(predictor="euler_maruyama", corrector="none", num_steps=1000), None),
    "pc_ancestral": ("pc", dict(predictor="ancestral_sampling", corrector="none", num_steps=1000), None),
    "pc_probability_flow": ("pc", dict(predictor="reverse_diffusion", corrector="none", num_steps=1000,
                                       probability_flow=True), None),
    "ode_tsit5": ("ode", dict(rtol=1e-5, atol=1e-5), None),
    "edm_heun": ("edm_heun", dict(num_steps=18), 35),
    # stochastic Heun (Alg. 2) at its largest churn, gamma = sqrt(2) - 1 per level: at 18 levels its mean error is
    # 1.8-2.0x the floor on VP, sub-VP and RF (discretisation, not bias: at 60 levels 0.4-0.55x)
    "edm_heun_stochastic": ("edm_heun", dict(num_steps=60, s_churn=40.0), 119),
    "unipc": ("unipc", dict(nfe=20, grid="logsnr"), 20),
    "dpm_solver_pp": ("dpm_solver_pp", dict(num_steps=20, denoise=False), 20),
    "annealed_langevin": ("ald", dict(num_steps=100, corrector_steps=50), None),
}


def _sample(sde, method, options, key, score_fn, shape=(N_SAMPLES, 2)):
  sample_fn = samplers.get_sampler(sde, shape, method, **options)
  return jax.jit(sample_fn, static_argnums=1)(key, score_fn)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral_sampling"])
@pytest.mark.slow
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
@pytest.mark.slow
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
  x, _ = _sample(sde, "ald", dict(num_steps=1, corrector_steps=1000), key, mixture.score_fn(sde))
  assert mixture.mode_metrics(x)["tv"] > 3 * floor["tv"]


DETERMINISTIC_IN_BATCH = {
    "edm_heun": dict(num_steps=6), "edm_heun_churn": dict(num_steps=6, s_churn=10.0), "dpm_solver_pp": dict(num_steps=6),
    "ode": dict(solver="heun", num_steps=8), "ald": dict(num_steps=3, corrector_steps=4),
    "pc": dict(predictor="ancestral_sampling", corrector="langevin", num_steps=8, langevin_step_rule="expected"),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC_IN_BATCH))
@pytest.mark.slow
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
  options = dict(predictor="none", corrector="langevin", num_steps=4)
  a, _ = _sample(sde, "pc", options, key, mixture.score_fn(sde), shape=(8, 2))
  c, _ = _sample(sde, "pc", options, key, mixture.score_fn(sde), shape=(16, 2))
  assert not np.allclose(a, c[:8], rtol=1e-4)


NFE_CASES = {
    "pc": ("pc", dict(predictor="reverse_diffusion", corrector="langevin", num_steps=5, corrector_steps=2)),
    "pc_no_denoise": ("pc", dict(predictor="euler_maruyama", corrector="ald", num_steps=4, denoise=False)),
    "pc_ladder": ("pc", dict(predictor="ancestral_sampling", corrector="langevin", ladder=True)),
    "ode_adaptive": ("ode", dict(rtol=1e-4, atol=1e-4)),
    "ode_dopri5": ("ode", dict(solver="dopri5", rtol=1e-3, atol=1e-3)),
    "ode_bosh3": ("ode", dict(solver="bosh3", rtol=1e-3, atol=1e-3)),
    "ode_heun_adaptive": ("ode", dict(solver="heun", rtol=1e-3, atol=1e-3)),
    "ode_euler_fixed": ("ode", dict(solver="euler", num_steps=7)),
    "ode_tsit5_fixed": ("ode", dict(solver="tsit5", num_steps=3, denoise=False)),
    "edm_heun": ("edm_heun", dict(num_steps=5)),
    "edm_heun_no_denoise": ("edm_heun", dict(num_steps=5, denoise=False)),
    "edm_heun_churn": ("edm_heun", dict(num_steps=4, s_churn=5.0)),
    "dpm_solver_pp": ("dpm_solver_pp", dict(num_steps=5)),
    "dpm_solver_pp_no_denoise": ("dpm_solver_pp", dict(num_steps=5, denoise=False)),
    "ald": ("ald", dict(num_steps=2, corrector_steps=3)),
    "ald_no_denoise": ("ald", dict(num_steps=2, corrector_steps=3, denoise=False)),
}


@pytest.mark.parametrize("name", list(NFE_CASES))
def test_reported_nfe_equals_executed_score_evaluations(name, mixture, key):
  sde = all_sdes()[2]
  method, options = NFE_CASES[name]
  counter = EvaluationCounter()
  sample_fn = samplers.get_sampler(sde, (64, 2), method, **options)
  x, nfe = jax.jit(lambda k: sample_fn(k, counter.wrap(mixture.score_fn(sde))))(key)
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert counter.count == int(nfe) > 0


def test_user_predictors_and_correctors_are_objects_not_registrations(mixture, key):
  """The registries are read-only; a Predictor/Corrector object passed in place of a name is used as is."""
  sde = all_sdes()[1]
  with pytest.raises(TypeError):
    samplers.PREDICTORS["mine"] = samplers.PREDICTORS["euler_maruyama"]
  em_copy = samplers.FunctionPredictor(lambda *args: samplers.PREDICTORS["euler_maruyama"](*args), supports_ladder=False)
  langevin_copy = samplers.FunctionCorrector(lambda *args: samplers.CORRECTORS["langevin"](*args))
  assert isinstance(em_copy, samplers.Predictor) and isinstance(langevin_copy, samplers.Corrector)
  options = dict(num_steps=20)
  a, _ = _sample(sde, "pc", dict(options, predictor=em_copy, corrector=langevin_copy), key, mixture.score_fn(sde), (32, 2))
  b, _ = _sample(sde, "pc", dict(options, predictor="euler_maruyama", corrector="langevin"), key,
                 mixture.score_fn(sde), (32, 2))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="or a Predictor object"):
    samplers.get_sampler(sde, (4, 2), "pc", predictor=42)


# score_sde's (eps, n_steps) and EDM's / k-diffusion's (S_churn, sigma_min) names of the options.
@pytest.mark.parametrize("method, old, new", [
    ("pc", dict(num_steps=6, n_steps=2, eps=1e-2), dict(num_steps=6, corrector_steps=2, t_min=1e-2)),
    ("ode", dict(solver="heun", num_steps=5, eps=1e-2), dict(solver="heun", num_steps=5, t_min=1e-2)),
    ("ald", dict(num_steps=3, corrector_steps=2, eps=1e-2), dict(num_steps=3, corrector_steps=2, t_min=1e-2)),
    ("edm_heun", dict(num_steps=4, eps=1e-2, sigma_min=0.01, S_churn=1.0), dict(num_steps=4, t_min=1e-2, sigma_floor=0.01, s_churn=1.0)),
    ("dpm_solver_pp", dict(num_steps=4, eps=1e-2, sigma_min=0.01), dict(num_steps=4, t_min=1e-2, sigma_floor=0.01)),
])
def test_other_libraries_option_names_are_aliases(method, old, new, mixture, key):
  sde = all_sdes()[0]
  a, nfe_a = _sample(sde, method, old, key, mixture.score_fn(sde), (16, 2))
  b, nfe_b = _sample(sde, method, new, key, mixture.score_fn(sde), (16, 2))
  np.testing.assert_array_equal(a, b)
  assert int(nfe_a) == int(nfe_b)
  alias = next(k for k in old if k in samplers.ALIASES[method])
  with pytest.raises(ValueError, match="given twice"):
    samplers.get_sampler(sde, (4, 2), method, **{alias: old[alias], samplers.ALIASES[method][alias]: old[alias]})


@pytest.mark.parametrize("method, options, match", [
    ("heun_sde", {}, r"method must be one of \['ald', 'dpm_solver_pp', 'edm_heun', 'ode', 'pc', 'sde_adaptive', 'unipc'\]"),
    ("pc", dict(predictor="ddim"), r"predictor must be one of \['ancestral_sampling', 'euler_maruyama', 'none', 'reverse_diffusion'\]"),
    ("pc", dict(corrector="hmc"), r"corrector must be one of \['ald', 'langevin', 'none'\]"),
    ("pc", dict(snr=0.0), "snr must be"),
    ("pc", dict(snr=-1.0), "snr must be"),
    ("pc", dict(num_steps=0), "num_steps must be"),
    ("pc", dict(t_min=0.0), r"t_min must be > 0 and < 1, got 0.0"),
    ("ode", dict(t_min=1.5), "t_min must be > 0 and < 1"),
    ("pc", dict(predictor="euler_maruyama", ladder=True), "no ladder step"),
    ("pc", dict(predictor="ancestral_sampling", ladder=True, num_steps=10), "ladder size"),
    ("pc", dict(predictor="ancestral_sampling", probability_flow=True), "no probability-flow form"),
    ("pc", dict(langevin_step_rule="per_sample"), "langevin_step_rule must be one of"),
    ("ode", dict(solver="rk4"), "solver must be one of"),
    ("ode", dict(solver="euler"), "has no error estimate"),
    ("edm_heun", dict(num_steps=1), "num_steps must be an integer >= 2"),
    ("dpm_solver_pp", dict(grid="cosine"), "grid must be one of"),
    ("edm_heun", dict(corrector_steps=3), r"unknown option\(s\) \['corrector_steps'\] for method 'edm_heun'"),
])
def test_bad_options_raise_clear_errors(method, options, match):
  with pytest.raises(ValueError, match=match):
    samplers.get_sampler(all_sdes()[0], (8, 2), method, **options)


@pytest.mark.parametrize("shape", [(8,), (), (0, 2), (8, 2.0)])
def test_shape_without_batch_raises(shape):
  with pytest.raises(ValueError, match="shape must be"):
    samplers.get_sampler(all_sdes()[0], shape, "pc")


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_edm_churn_never_queries_the_network_past_T(sde, mixture):
  """Stochastic Heun raises sigma by (1 + gamma) but never above sigma(T): a time > T (outside the training
  range) would make this score NaN, and the samples with it."""
  exact = mixture.score_fn(sde)
  score = lambda x, t: jnp.where((t <= sde.T)[:, None], exact(x, t), jnp.nan)
  x, _ = samplers.get_sampler(sde, (64, 2), "edm_heun", num_steps=8, s_churn=40.0)(jax.random.key(0), score)
  assert bool(jnp.all(jnp.isfinite(x)))
