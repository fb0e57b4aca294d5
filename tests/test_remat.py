"""Rematerialisation and mixed precision change how the training step runs, never what it computes.

``training.remat`` wraps every residual / attention block in ``jax.checkpoint`` with a named policy:
the loss and its gradient must equal the plain network's (dropout on, so the recomputed blocks must
draw the same masks) and the parameter tree must be the same, names and values, so published
checkpoints still load. ``training.compute_dtype="bfloat16"`` must train on float32 parameters
with finite values.
"""

import functools
import importlib

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from training import step as step_lib
from schema import parse_config
from training.train import make_step_fn, setup

NETWORKS = {"ncsnpp": "configs.ve.cifar10", "ddpmpp": "configs.vp.cifar10"}
SIZE, BATCH = 8, 4             # 8x8, two resolutions: every block kind, attention at 8 (and in the middle)


def _config(name: str, **training):
  """A CPU-sized variant of the CIFAR-10 config: two resolutions, one block each, nf=16."""
  config = importlib.import_module(NETWORKS[name]).get_config()
  config.model.update(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(SIZE,))
  config.data.image_size = SIZE
  config.training.update(batch_size=BATCH, **training)
  return parse_config(config)


def _params(config):
  """Initial parameters, perturbed so no layer is near zero (init_scale=0 layers start at 1e-10)."""
  params = models.init_params(models.get_model(config), jax.random.key(0), (1, SIZE, SIZE, 3))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _loss_and_grad(config, params):
  """The DSM loss of the training network (dropout on) and its gradient, jitted."""
  sde = sde_lib.get_sde(config)
  apply_fn = models.make_apply_fn(models.get_model(config, training=True))
  loss_fn = sde_lib.get_loss_fn(sde, continuous=True, t_min=config.training.t_min)
  x = jax.random.uniform(jax.random.key(2), (BATCH, SIZE, SIZE, 3))

  def objective(params):
    score_fn = models.get_score_fn(sde, apply_fn, params, continuous=True, train=True,
                                   rngs={"dropout": jax.random.key(3)})
    return loss_fn(jax.random.key(4), score_fn, x)

  return jax.jit(jax.value_and_grad(objective))(params)


@functools.lru_cache(maxsize=None)
def _result(name: str, remat: str = "none", compute_dtype: str = "float32"):
  """(loss, gradient) of network ``name`` under the training options, on the same perturbed parameters
  (cached: each is a compilation of a few seconds to a minute on a loaded CPU)."""
  return _loss_and_grad(_config(name, remat=remat, compute_dtype=compute_dtype), _params(_config(name)))


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.slow
def test_every_remat_policy_gives_the_same_loss_gradient_and_parameters(name):
  plain = _config(name)
  loss0, grads0 = _result(name)
  assert np.isfinite(float(loss0))
  for policy in ("full", "dots"):
    config = _config(name, remat=policy)
    model = models.get_model(config, training=True)
    assert model.remat == policy
    # The same parameter tree (names, shapes and initial values).
    remat_params = models.init_params(model, jax.random.key(0), (1, SIZE, SIZE, 3))
    reference = models.init_params(models.get_model(plain), jax.random.key(0), (1, SIZE, SIZE, 3))
    assert jax.tree.structure(remat_params) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, remat_params, reference)
    # The same loss and gradient, to float32 round-off (relative to the largest gradient entry: some
    # entries are zero in exact arithmetic, e.g. the attention keys' bias, softmax being shift-invariant).
    loss, grads = _result(name, policy)
    np.testing.assert_allclose(float(loss), float(loss0), rtol=1e-6)
    flat, flat0 = (jax.flatten_util.ravel_pytree(g)[0] for g in (grads, grads0))
    np.testing.assert_allclose(flat, flat0, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(flat0))), err_msg=policy)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.slow
def test_bfloat16_compute_trains_float32_parameters_with_finite_values(name):
  """One training step (loss, gradient, Adam, EMA) with compute_dtype=bfloat16 and remat=full:
  finite loss and gradient norm, every parameter / EMA / Adam moment still float32 and finite, and the
  loss within bfloat16 round-off (a few per cent) of the float32 one on the same parameters."""
  loss32, _ = _result(name)
  loss16, grads16 = _result(name, "none", "bfloat16")
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads16))
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=5e-2)

  config = _config(name, compute_dtype="bfloat16", remat="full")
  run = setup(config)
  assert (run.model.compute_dtype, run.model.remat) == ("bfloat16", "full")
  from training.state import create_train_state
  state = create_train_state(run.model, run.optimizer, run.init_key, (1,) + run.data_shape)
  step_fn = step_lib.shard_step(make_step_fn(run), run.mesh)
  batches = step_lib.put_batches(np.asarray(jax.random.uniform(jax.random.key(5), (1, BATCH, SIZE, SIZE, 3))),
                                 run.mesh)
  state, metrics = step_fn(state, batches, run.step_key)
  assert np.all(np.isfinite(np.asarray(metrics["loss"]))) and np.all(np.isfinite(np.asarray(metrics["grad_norm"])))
  for leaf in jax.tree.leaves((state.params, state.ema_params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
      assert bool(jnp.all(jnp.isfinite(leaf)))


def test_remat_and_compute_dtype_are_training_fields():
  """They are validated in config.training (an error names the field) and refused in config.model."""
  with pytest.raises(ValueError, match="training.remat"):
    _config("ncsnpp", remat="everything")
  with pytest.raises(ValueError, match="training.compute_dtype"):
    _config("ncsnpp", compute_dtype="float16")
  config = importlib.import_module(NETWORKS["ncsnpp"]).get_config()
  config.model.remat = "full"
  with pytest.raises(ValueError, match="model.remat is not a model field: set training.remat"):
    parse_config(config)
  # Sampling and checkpoint loading build the plain network whatever the training options.
  assert models.get_model(_config("ncsnpp", remat="full", compute_dtype="bfloat16")).remat == "none"
