"""Score networks: faithful to score_sde's parameter counts, wired correctly, parameterised exactly."""

import importlib
import json
import math
import os
import re

import flax.linen
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from data_lib import GaussianMixture
from models import fir, layers
from tests.conftest import SDE_IDS, all_sdes

REFERENCE_COUNTS = {          # parameters of score_sde's networks on 32x32x3 (../shared/reference_configs.md)
    "configs.ve.cifar10": 62_758_915,
    "configs.ve.cifar10_deep": 107_587_075,
    "configs.ve.cifar10_discrete": 62_693_251,
    "configs.vp.cifar10": 61_804_419,
    "configs.vp.cifar10_deep": 106_632_579,
    "configs.subvp.cifar10": 61_804_419,
    "configs.subvp.cifar10_deep": 106_632_579,
}
# The published high-resolution VE models and the discrete DDPM++ / DDPM configs, counted on the
# reference's own code (tests/reference/make_score_sde_pytorch_fixtures.py, torch: model.parameters()).
with open(os.path.join(os.path.dirname(__file__), "reference", "data", "score_sde_pytorch_param_counts.json")) as _f:
  REFERENCE_COUNTS.update(json.load(_f))


def _config(name):
  return importlib.import_module(name).get_config()


@pytest.mark.parametrize("name", list(REFERENCE_COUNTS))
def test_parameter_counts_equal_the_reference(name):
  config = _config(name)
  model = models.get_model(config)
  shape = (1, config.data.image_size, config.data.image_size, config.data.num_channels)
  assert models.count_params(model, shape) == REFERENCE_COUNTS[name]
  shapes = jax.eval_shape(models.initializer(model, shape), jax.random.key(0))
  fixed = sum(v.size for k, v in jax.tree_util.tree_leaves_with_path(shapes) if "GaussianFourierProjection" in str(k))
  assert fixed == (config.model.nf if config.model.get("embedding_type") == "fourier" else 0)


def _small(config, **overrides):
  """The configuration at reduced width and depth (CPU-friendly), the same topology: two resolutions
  keep every down/up path, pyramid and combine, and 16x16 inputs keep attention at 16."""
  config.model.nf = 16
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  for k, v in overrides.items():
    config.model[k] = v
  return config


VARIANTS = {
    "ncsnpp_ve": ("configs.ve.cifar10", {}),
    "ddpmpp_vp": ("configs.vp.cifar10", {}),
    "ncsnpp_discrete": ("configs.ve.cifar10_discrete", {}),
    "output_skip_cat": ("configs.ve.cifar10", dict(progressive="output_skip", progressive_input="input_skip",
                                                   progressive_combine="cat")),
    "output_residual_ddpm_blocks": ("configs.ve.cifar10", dict(progressive="residual", resblock_type="ddpm")),
    "ddpm": ("configs.vp.cifar10_ddpm", dict(nf=32)),      # DDPM's GroupNorms need channels in multiples of 32
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.slow
def test_shape_zero_init_and_time_conditioning(variant, key):
  """Output shaped like the input; with init_scale = 0 the last layers start at zero (so does the
  output); once the weights move, the output depends on the labels (conditioning is wired)."""
  name, overrides = VARIANTS[variant]
  model = models.get_model(_small(_config(name), **overrides))
  x = jax.random.uniform(key, (2, 16, 16, 3))

  @jax.jit
  def run(key):
    params = model.init({"params": key}, x, jnp.ones(2))["params"]
    at_init = model.apply({"params": params}, x, jnp.array([0.5, 3.0]))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    moved = unravel(flat + 0.05 * jax.random.normal(jax.random.fold_in(key, 1), flat.shape))
    both = model.apply({"params": moved}, jnp.concatenate([x, x]), jnp.array([0.5, 0.5, 20.0, 20.0]))
    return at_init, both[:2], both[2:]

  at_init, out1, out2 = run(key)
  assert at_init.shape == out1.shape == x.shape and np.all(np.isfinite(out1))
  assert float(jnp.max(jnp.abs(at_init))) < 1e-3                  # init_scale 0 -> 1e-10 last layers
  assert float(jnp.max(jnp.abs(out1))) > 1e-2                     # ... and not because the net is dead
  assert float(jnp.max(jnp.abs(out1 - out2))) > 1e-4              # the labels reach the output


def test_digits_sized_unet_and_mlp(key):
  config = _config("configs.vp.cifar10")
  config.model.update(nf=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(4,))
  model = models.get_model(config)
  n = models.count_params(model, (1, 8, 8, 1))
  assert 2e5 < n < 2e6                                                 # a few hundred thousand for 8x8 digits
  mlp = models.MLP(hidden=64, depth=2)
  x = jax.random.normal(key, (5, 3))
  params = models.init_params(mlp, key, x.shape)
  assert models.make_apply_fn(mlp)(params, x, jnp.arange(5.0)).shape == (5, 3)


def test_fir_up_then_down_preserves_a_constant_image():
  x = jnp.full((1, 12, 12, 2), 3.7)
  y = fir.downsample_2d(fir.upsample_2d(x))
  assert y.shape == x.shape
  np.testing.assert_allclose(y[:, 1:-1, 1:-1], 3.7, rtol=1e-6)          # borders see the zero padding
  np.testing.assert_allclose(fir.upsample_2d(x)[:, 2:-2, 2:-2], 3.7, rtol=1e-6)
  np.testing.assert_allclose(fir.naive_downsample_2d(fir.naive_upsample_2d(x)), x)


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 2)), (2, 1, (-1, 2)),
                                         (1, 2, (0, 3)), (3, 1, (1, 2))])
def test_separable_fir_equals_the_2d_depthwise_convolution(key, up, down, pad):
  # upfirdn2d with a 1-D kernel f filters one axis at a time; with outer(f, f) it runs one depthwise 2-D
  # convolution. Separability makes the two equal; an asymmetric f checks the flip of a true convolution.
  x = jax.random.normal(key, (2, 7, 9, 3))
  for f in (fir.fir_kernel_1d((1, 3, 3, 1), 4.0), np.array([1.0, 2.0, 5.0], np.float32)):
    separable = fir.upfirdn2d(x, f, up=up, down=down, pad=pad)
    depthwise = fir.upfirdn2d(x, np.outer(f, f), up=up, down=down, pad=pad)
    assert separable.shape == depthwise.shape
    np.testing.assert_allclose(separable, depthwise, atol=1e-5)


def test_attention_is_permutation_equivariant(key):
  block = layers.AttnBlock(init_scale=1.0)
  x = jax.random.normal(key, (2, 4, 4, 8))
  params = block.init(key, x)
  perm = jax.random.permutation(jax.random.key(5), 16)
  permute = lambda v: v.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8)
  np.testing.assert_allclose(block.apply(params, permute(x)), permute(block.apply(params, x)), rtol=1e-5, atol=1e-5)


def test_ema_matches_its_closed_form():
  ema, p, rate = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 5.0])}, 0.9
  for _ in range(7):
    ema = models.ema_update(ema, p, rate)
  expected = rate**7 * np.array([1.0, -2.0]) + (1 - rate**7) * np.array([3.0, 5.0])
  np.testing.assert_allclose(ema["w"], expected, rtol=1e-6)
  with pytest.raises(ValueError, match="ema rate"):
    models.ema_update(ema, p, 1.5)


def test_ema_warmup_forgets_the_initial_parameters():
  """With warm-up, the initial value's weight after n updates is prod_k min(rate, (1+k)/(10+k)), k = 1..n:
  10! (n+1)! / (n+10)! while (1+k)/(10+k) < rate (score_sde_pytorch's num_updates), not rate^n."""
  e0, p, rate = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 5.0])}, 0.999
  ema = e0
  for n in range(1, 41):
    ema = jax.jit(models.ema_update, static_argnums=2)(ema, p, rate, n)
  weight = math.factorial(10) * math.factorial(41) / math.factorial(50)
  assert weight < 1e-8
  np.testing.assert_allclose(ema["w"], weight * e0["w"] + (1 - weight) * p["w"], rtol=1e-6)
  # Far into training the cap is the plain rate.
  assert float(models.ema_warmup_rate(rate, 10**6)) == pytest.approx(rate)
  assert float(models.ema_warmup_rate(rate, 1)) == pytest.approx(2 / 11)


# ------------------------------------------------------------------------- score parameterisations
def _recording_apply(output_fn):
  """A fake network whose output is output_fn(x, labels), so the score has a closed form."""
  return lambda params, x, labels, train=False, rngs=None: output_fn(x, labels)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
@pytest.mark.parametrize("continuous", [True, False])
def test_reference_parameterisation(sde, continuous, key):
  x = jax.random.normal(key, (6, 3))
  t = jnp.linspace(0.1, 0.9, 6)
  # score_sde's labels: sigma(t) / 999 t (continuous); the index from sigma_max (VE) or the unrounded
  # t (N - 1) with the noise scale of level floor(t (N - 1)) (VP, sub-VP) on the discrete ladder.
  if continuous:
    a, s = sde.marginal_coefs(t)
    labels = sde.sigma(t) if sde.variance_exploding else 999.0 * t
  elif sde.variance_exploding:
    a, s = sde.discrete_marginal(t)
    labels = 999 - jnp.round(999 * t)
    np.testing.assert_allclose(sde.discrete_coefs()[1][999 - np.asarray(labels, int)], s, rtol=1e-6)
  else:
    labels = 999 * t
    a, s = (jnp.asarray(v, jnp.float32)[jnp.floor(999 * t + 1e-4).astype(int)] for v in sde.discrete_coefs())
  seen = {}

  def out(x, lab):
    seen["labels"] = lab
    return x + 1.0

  score = models.get_score_fn(sde, _recording_apply(out), None, continuous=continuous, scale_by_sigma=True)(x, t)
  np.testing.assert_allclose(seen["labels"], labels, rtol=1e-5)
  if sde.variance_exploding:
    np.testing.assert_allclose(score, (x + 1) / s[:, None], rtol=1e-5)      # the network predicts the score
  else:
    np.testing.assert_allclose(score, -(x + 1) / s[:, None], rtol=1e-5)     # it predicts the noise


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_epsilon_parameterisation(sde, key):
  """eps-hat = z gives score -z / s(t)."""
  x, z = jax.random.normal(key, (2, 6, 3))
  t = jnp.linspace(0.1, 0.9, 6)
  score = models.get_score_fn(sde, _recording_apply(lambda x_, lab: z), None, parameterization="epsilon")(x, t)
  np.testing.assert_allclose(score, -z / sde.marginal_coefs(t)[1][:, None], rtol=1e-5)


@pytest.mark.parametrize("sde", all_sdes(), ids=SDE_IDS)
def test_edm_preconditioning_is_exact_for_gaussian_data(sde, key):
  """With F = 0, D = c_skip x_hat is the exact denoiser of N(0, sigma_data^2) data, so the score is exact."""
  sigma_data = 0.7
  gaussian = GaussianMixture([1.0], [[0.0, 0.0]], [[sigma_data**2, sigma_data**2]])
  x = jax.random.normal(key, (6, 2)) * 2
  t = jnp.linspace(0.05, 0.95, 6)
  zero_net = _recording_apply(lambda x_, lab: jnp.zeros_like(x_))
  score = models.get_score_fn(sde, zero_net, None, parameterization="edm", sigma_data=sigma_data)(x, t)
  np.testing.assert_allclose(score, gaussian.score_t(x, t, sde), rtol=1e-4, atol=1e-6)


def test_model_registry_errors():
  config = _config("configs.ve.cifar10")
  config.model.name = "unet3d"
  with pytest.raises(ValueError, match=re.escape(f"model.name must be one of {sorted(models.MODELS)}")):
    models.get_model(config)
  config = _config("configs.ve.cifar10")
  config.model.resblock_type = "resnext"
  with pytest.raises(ValueError, match=r"model.resblock_type must be one of \['biggan', 'ddpm'\]"):
    models.get_model(config)
  # ConfigDict itself refuses 2.5 for an int field; a plain mapping (a hand-built or JSON config) does not.
  fields = dict(_config("configs.ve.cifar10").model, num_res_blocks=2.5)
  with pytest.raises(ValueError, match="model.num_res_blocks must be like 4"):
    models.model_kwargs(models.NCSNpp, fields, {"centered": False})
  config = _config("configs.ve.cifar10")
  del config.model["fir_kernel"]
  with pytest.raises(ValueError, match="model.fir_kernel is missing"):
    models.get_model(config)
  with pytest.raises(ValueError, match="parameterization must be one of"):
    models.get_score_fn(sde_lib.VPSDE(), None, None, parameterization="v")


@pytest.mark.parametrize("groups,dtype,hw", [(4, jnp.float32, (16, 17)), (1, jnp.float32, (16, 17)),
                                             (8, jnp.bfloat16, (16, 17)), (4, jnp.float32, (5, 6))])
def test_group_norm_matches_flax_output_and_gradients(key, groups, dtype, hw):
  """models.norm.GroupNorm against autodiff of flax's nn.GroupNorm: same parameters, output, and gradients
  w.r.t. input, scale and bias (scale and bias not at their init); 16x17 images take the hand-written
  backward, 5x6 ones autodiff's."""
  from models import norm

  assert (hw[0] * hw[1] >= norm.CUSTOM_BACKWARD_MIN_PIXELS) == (hw == (16, 17))
  kx, ks, kb, kg = jax.random.split(key, 4)
  x = (3.0 * jax.random.normal(kx, (2, *hw, 16)) + 1.0).astype(dtype)
  ours, theirs = norm.GroupNorm(groups, 1e-6), flax.linen.GroupNorm(num_groups=groups, epsilon=1e-6)
  params = ours.init(key, x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, theirs.init(key, x))
  params = {"params": {"scale": jax.random.normal(ks, (16,)), "bias": jax.random.normal(kb, (16,))}}
  cotangent = jax.random.normal(kg, x.shape)
  y_ours, vjp_ours = jax.vjp(lambda p, x: ours.apply(p, x), params, x.astype(jnp.float32))
  y_theirs, vjp_theirs = jax.vjp(lambda p, x: theirs.apply(p, x), params, x.astype(jnp.float32))
  assert ours.apply(params, x).dtype == theirs.apply(params, x).dtype
  np.testing.assert_allclose(y_ours, y_theirs, atol=1e-5)
  for a, b in zip(jax.tree.leaves(vjp_ours(cotangent)), jax.tree.leaves(vjp_theirs(cotangent))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
