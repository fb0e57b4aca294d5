"""models.conv and models.cotangent: every ``training.backward`` computes jax's own gradient.

The forward pass is lax's convolution itself (equal bit for bit); the input gradient and the kernel gradient
(per-tap matrix products or one convolution over the batch axis) equal jax's transpose rules to float32
round-off, for the strides and paddings ``models.layers`` uses (3x3 "SAME" stride 1, 3x3 stride 2 padded
right/bottom as TF's "SAME", 1x1) and odd sizes where a stride leaves input rows unreached. The materialising
identity after each convolution, NIN and GroupNorm ("materialised", main.py's choice on CPU) is the identity
with the identity's VJP. A whole network built with either has the same parameter tree and the same loss
gradient.
"""

import functools
import importlib
import itertools

import flax.linen as nn
import jax
import jax.flatten_util
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import models
from models import conv, layers, norm
from schema import parse_config

# (input [B, H, W, C_in], kernel size, C_out, stride, padding): the layers' cases and odd-sized ones
CASES = {
    "3x3_same": ((2, 8, 8, 3), 3, 5, 1, "SAME"),
    "3x3_stride2_tf_same": ((2, 8, 8, 4), 3, 6, 2, ((0, 1), (0, 1))),
    "3x3_stride2_odd": ((2, 9, 7, 4), 3, 6, 2, ((0, 1), (0, 1))),
    "3x3_stride2_same_odd": ((1, 7, 7, 3), 3, 4, 2, "SAME"),
    "3x3_valid": ((1, 5, 6, 2), 3, 3, 1, "VALID"),
    "3x3_stride2_valid": ((1, 8, 7, 2), 3, 3, 2, "VALID"),
    "1x1": ((2, 8, 8, 4), 1, 6, 1, "SAME"),
}
DN = ("NHWC", "HWIO", "NHWC")


def _inputs(case):
  shape, k, c_out, stride, padding = CASES[case]
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, (k, k, shape[-1], c_out))
  return x, w, (stride, stride), padding, kg


def _reference(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN, precision="highest")


@pytest.mark.parametrize("kernel_grad", conv.KERNEL_GRADS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_gradients_equal_jax_autodiff(case, kernel_grad):
  x, w, strides, padding, kg = _inputs(case)
  y0, vjp0 = jax.vjp(functools.partial(_reference, strides=strides, padding=padding), x, w)
  y1, vjp1 = jax.vjp(lambda x, w: conv.conv(x, w, strides, padding, kernel_grad, precision="highest"), x, w)
  np.testing.assert_array_equal(y1, y0)
  g = jax.random.normal(kg, y0.shape)
  (dx0, dw0), (dx1, dw1) = vjp0(g), vjp1(g)
  assert dx1.shape == x.shape and dw1.shape == w.shape
  # float32 sums of up to B H W products reordered: ~1e-7 relative to the largest entry
  for got, want in ((dx1, dx0), (dw1, dw0)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_unreached_input_rows_get_zero_gradient():
  """Stride 2, no padding, over 8 rows: windows start at rows 0, 2, 4 and end at row 6, so row 7 feeds no
  output (8 - 3 = 5 is odd); over 7 columns (7 - 3 = 4, even) every column does."""
  x, w, strides, padding, _ = _inputs("3x3_stride2_valid")
  y, vjp = jax.vjp(lambda x: conv.conv(x, w, strides, padding), x)
  assert y.shape == (1, 3, 3, 3)
  (dx,) = vjp(jnp.ones(y.shape))
  np.testing.assert_array_equal(dx[:, 7], 0.0)
  assert float(jnp.min(jnp.max(jnp.abs(dx[:, :7]), axis=-1))) > 0


def test_check_grads_first_order():
  """Finite differences in both modes (a check independent of jax's own transpose rules)."""
  x, w, strides, padding, _ = _inputs("3x3_stride2_tf_same")
  jax.test_util.check_grads(lambda x, w: conv.conv(x, w, strides, padding, precision="highest"), (x, w), order=1,
                            modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)


def test_flax_conv_takes_it_and_errors_name_the_choices():
  x = jnp.ones((1, 4, 4, 2))
  for vjp in layers.BACKWARDS:
    module = layers.conv3x3(3, backward=vjp)
    params = module.init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, params) == {"kernel": (3, 3, 2, 3), "bias": (3,)}
  with pytest.raises(ValueError, match=r"backward must be one of \['auto', 'xla', 'materialised', 'taps'\], "
                     r"got 'fast'"):
    layers.conv3x3(3, backward="fast")
  with pytest.raises(ValueError, match="kernel_grad must be one of"):
    conv.conv(x, jnp.ones((3, 3, 2, 3)), kernel_grad="im2col")
  with pytest.raises(ValueError, match="without dilation or groups"):
    conv.conv_general_dilated(x, jnp.ones((3, 3, 2, 3)), (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN)


NETWORKS = {"ncsnpp": "configs.ve.cifar10", "ddpmpp": "configs.vp.cifar10"}
SIZE, BATCH = 8, 2


def _config(name: str, vjp: str = "xla"):
  """A CPU-sized CIFAR-10 config (two resolutions, one block each, nf=16) with ``training.backward = vjp``."""
  config = importlib.import_module(NETWORKS[name]).get_config()
  config.model.update(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(SIZE,))
  config.data.image_size = SIZE
  config.training.backward = vjp
  return parse_config(config)


def _network(name: str, vjp: str = "xla"):
  """The network the training step differentiates, built from the config: every conv3x3 / conv1x1 of its
  blocks and heads computes its gradient by ``vjp`` (``training.backward``)."""
  return models.get_model(_config(name, vjp), training=True)


@functools.lru_cache(maxsize=None)
def _network_loss_grad(name: str, vjp: str = "xla"):
  """``_loss_grad`` of ``_network(name, vjp)``, computed once per test process (the xla baseline is shared by
  the parametrisations that compare with it)."""
  return _loss_grad(_network(name, vjp))


def _loss_grad(model):
  params = models.init_params(model, jax.random.key(0), (1, SIZE, SIZE, 3))
  leaves, tree = jax.tree.flatten(params)       # perturbed: init_scale=0 layers start at 1e-10
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  apply_fn = models.make_apply_fn(model)
  x = jax.random.uniform(jax.random.key(2), (BATCH, SIZE, SIZE, 3))
  t = jnp.array([0.3, 0.8])

  def loss(p):
    out = apply_fn(p, x, t, train=True, rngs={"dropout": jax.random.key(3)})
    return jnp.mean(jnp.square(out))

  return params, jax.jit(jax.value_and_grad(loss))(params)


def test_materialise_cotangent_is_the_identity_with_the_same_vjp():
  """Its value and its VJP are the identity's, bit for bit (products with 1 and sums with 0 are exact), in
  float32 and bfloat16; "auto" is "materialised" on the CPU backend the tests run on."""
  for dtype in (jnp.float32, jnp.bfloat16):
    y = jax.random.normal(jax.random.key(0), (2, 3, 3, 5)).astype(dtype)
    g = jax.random.normal(jax.random.key(1), y.shape).astype(dtype)
    out, vjp = jax.vjp(layers.materialise_cotangent, y)
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(vjp(g)[0], g)
    assert vjp(g)[0].dtype == dtype
  assert jax.default_backend() == "cpu" and layers.resolve_backward("auto") == "materialised"
  assert layers.resolve_backward("xla") == "xla"


@pytest.mark.parametrize("vjp", ["taps", "materialised"])
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.slow
def test_network_gradient_and_parameters_unchanged(name, vjp):
  params0, (loss0, grads0) = _network_loss_grad(name)
  params1, (loss1, grads1) = _network_loss_grad(name, vjp)
  assert jax.tree.structure(params1) == jax.tree.structure(params0)
  jax.tree.map(np.testing.assert_array_equal, params1, params0)
  np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-6)
  flat, flat0 = (jax.flatten_util.ravel_pytree(g)[0] for g in (grads1, grads0))
  np.testing.assert_allclose(flat, flat0, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(flat0))))


def test_backward_is_a_validated_training_field_that_reaches_every_block():
  """training.backward: one line naming the field and the choices on a bad value; the sampling network
  (training=False) keeps autodiff's; the trained one passes the choice to every convolution, NIN and GroupNorm
  of both networks."""
  with pytest.raises(ValueError, match=r"training.backward must be one of .*'xla'.*'materialised'.*'taps'"):
    _config("ncsnpp", "fast")
  assert parse_config(importlib.import_module(NETWORKS["ncsnpp"]).get_config()).training.backward == "auto"
  assert models.get_model(_config("ncsnpp", "taps")).backward == "xla"
  takes = {"taps": lambda conv: conv.conv_general_dilated is not None and not conv.materialise,
           "materialised": lambda conv: conv.conv_general_dilated is None and conv.materialise}
  for name, (vjp, took) in itertools.product(NETWORKS, takes.items()):
    model = _network(name, vjp)
    assert model.backward == vjp
    seen, others = [], []

    def record(next_fun, args, kwargs, context):     # every nn.Conv, NIN and GroupNorm the network runs
      module = context.module
      if isinstance(module, nn.Conv):
        seen.append(isinstance(module, layers.Conv) and took(module))
      elif isinstance(module, (norm.GroupNorm, layers.Dense)):
        others.append(module.materialise == (vjp == "materialised"))
      return next_fun(*args, **kwargs)

    params = models.init_params(model, jax.random.key(0), (1, SIZE, SIZE, 3))
    with nn.intercept_methods(record):
      models.make_apply_fn(model)(params, jnp.zeros((1, SIZE, SIZE, 3)), jnp.array([0.5]))
    assert others and all(others), f"{others.count(False)} of {len(others)} NINs / GroupNorms of {name} ignore {vjp!r}"
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} convolutions of {name} ignore {vjp!r}"
