"""Class-conditional networks for classifier-free guidance: the null label, label dropout, the config checks."""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
import sde_lib
from configs.vp import digits as vp_digits
from configs.toy import ve as toy_ve
from models.mlp import MLP
from training import step as step_lib, tasks
from schema import parse_config
from training.state import create_train_state

NUM_CLASSES = 3


def _mlp(num_classes=NUM_CLASSES):
  return MLP(hidden=16, depth=1, nf=8, num_classes=num_classes)


@pytest.mark.slow
def test_the_null_label_is_the_unconditional_call_and_classes_change_the_output(key):
  model = _mlp()
  params = models.init_params(model, key, (4, 2))
  assert params["class_embed"]["embedding"].shape == (NUM_CLASSES + 1, 16)    # one row per class + the null label
  # The last layer starts at zero: perturb the parameters so that the output depends on the labels.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.fold_in(key, p.size), p.shape), params)
  x, t = jax.random.normal(key, (4, 2)), jnp.full((4,), 0.5)
  apply = models.make_apply_fn(model)
  none = apply(params, x, t)
  null = apply(params, x, t, class_labels=jnp.full((4,), NUM_CLASSES))
  np.testing.assert_array_equal(none, null)
  outputs = [apply(params, x, t, class_labels=jnp.full((4,), c)) for c in range(NUM_CLASSES)]
  for i in range(NUM_CLASSES):
    assert float(jnp.max(jnp.abs(outputs[i] - null))) > 1e-3
  # Each row follows its own label.
  mixed = apply(params, x, t, class_labels=jnp.arange(4) % NUM_CLASSES)
  np.testing.assert_allclose(mixed[1], outputs[1][1], rtol=1e-6)


def test_an_unconditional_network_refuses_labels(key):
  model = _mlp(0)
  params = models.init_params(model, key, (2, 2))
  assert "class_embed" not in params
  with pytest.raises(ValueError, match="num_classes = 0"):
    models.make_apply_fn(model)(params, jnp.zeros((2, 2)), jnp.ones(2), class_labels=jnp.zeros(2, jnp.int32))


def _perturbed(state, key):
  """The state with random parameters (the zero-initialised last layer would stop every other gradient)."""
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.fold_in(key, p.size), p.shape), state.params)
  return state.replace(params=params)


def _one_step(label_dropout, labels, key):
  sde = sde_lib.VPSDE(0.1, 20.0, 1000)
  model = _mlp()
  optimizer = optax.adam(1e-2)
  state = _perturbed(create_train_state(model, optimizer, key, (8, 2)), key)
  apply = models.make_apply_fn(model)

  def score_fn_of(params, *, train=False, rngs=None, class_labels=None):
    return models.get_score_fn(sde, functools.partial(apply, class_labels=class_labels), params, train=train, rngs=rngs)

  task = tasks.ScoreTask(sde, score_fn_of, num_classes=NUM_CLASSES, label_dropout=label_dropout)
  step = step_lib.make_train_step(task, optimizer, ema_rate=0.9)
  x = jax.random.normal(jax.random.fold_in(key, 1), (1, 8, 2))
  state, metrics = jax.jit(step)(state, (x, labels[None]), jax.random.fold_in(key, 2))
  return state, metrics


@pytest.mark.slow
def test_label_dropout_one_trains_the_unconditional_score_and_zero_the_conditional(key):
  """Dropout 1 replaces every label by the null label (the same step as null labels given); dropout 0 keeps them.
  The same step up to float32 rounding: the two are different programs, which XLA may fuse differently."""
  labels = jnp.arange(8) % NUM_CLASSES
  null = jnp.full((8,), NUM_CLASSES)
  dropped, dropped_metrics = _one_step(1.0, labels, key)
  given_null, null_metrics = _one_step(0.0, null, key)
  kept, kept_metrics = _one_step(0.0, labels, key)
  np.testing.assert_allclose(dropped_metrics["loss"], null_metrics["loss"], rtol=1e-6)
  assert abs(float(kept_metrics["loss"][0]) / float(null_metrics["loss"][0]) - 1) > 1e-3     # the labels matter
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), dropped.params, given_null.params)
  # Labels 0..2 train rows 0..2 of the embedding; null labels train row 3 only.
  start = _perturbed(create_train_state(_mlp(), optax.adam(1e-2), key, (8, 2)), key).params["class_embed"]["embedding"]
  delta = lambda s: np.abs(np.asarray(s.params["class_embed"]["embedding"]) - np.asarray(start)).sum(1)
  assert np.all(delta(kept)[:NUM_CLASSES] > 0) and delta(kept)[NUM_CLASSES] == 0
  assert np.all(delta(dropped)[:NUM_CLASSES] == 0) and delta(dropped)[NUM_CLASSES] > 0


def test_class_condition_config_errors_name_the_field():
  raw = vp_digits.get_config()
  raw.sampling.condition = "class"
  with pytest.raises(ValueError, match="model.num_classes > 0"):
    parse_config(raw)
  raw.model.num_classes = 10
  raw.sampling.class_label = 10
  with pytest.raises(ValueError, match="sampling.class_label must be -1 or in 0 .. 9"):
    parse_config(raw)
  raw.sampling.class_label = 9
  assert parse_config(raw).model.network["num_classes"] == 10
  toy = copy.deepcopy(toy_ve.get_config())
  toy.model.num_classes = 2
  with pytest.raises(ValueError, match="model.num_classes=2 needs labelled data"):
    parse_config(toy)


def test_digits_batches_carry_the_labels_of_their_images():
  from data_lib.images import get_dataset, load_digits_arrays

  config = parse_config(vp_digits.get_config())
  data = get_dataset(config.data, "train", seed=3)
  x_train, y_train, _, _ = load_digits_arrays()
  idx = data.indices(5, 16)
  np.testing.assert_array_equal(data.labels(idx), y_train[idx])
  np.testing.assert_allclose(data.batch(5, 16), 2 * x_train[idx].astype(np.float32) / 255.0 - 1, atol=1e-6)


def test_the_classifier_sees_the_noise_label_and_a_unit_scale_input_and_guides_by_its_log_softmax(key):
  """logits_fn passes noise_labels(t) and 1 / sqrt(a^2 + s^2); the log-likelihood is log softmax at the label."""
  sde = sde_lib.VESDE(0.01, 10.0, 1000)
  seen = {}

  def apply_fn(params, x, labels, train, rngs, input_scale):
    seen.update(labels=labels, scale=input_scale)
    total = x.reshape(len(x), -1).sum(1) * input_scale
    return jnp.stack([total, -total, jnp.zeros_like(total)], axis=1)

  x, t = jax.random.normal(key, (2, 4, 4, 1)), jnp.array([0.3, 1.0])
  logits_fn = models.classifier.get_logits_fn(sde, apply_fn, None)
  logits = logits_fn(x, t)
  a, s = sde.marginal_coefs(t)
  np.testing.assert_allclose(seen["scale"], 1 / np.sqrt(a**2 + s**2), rtol=1e-6)
  np.testing.assert_allclose(seen["labels"], sde.sigma(t), rtol=1e-6)        # VE: the noise level, as the score net
  labels = jnp.array([0, 2])
  log_p = models.classifier.get_log_likelihood_fn(logits_fn, labels)(x, t)
  np.testing.assert_allclose(log_p, jax.nn.log_softmax(logits)[jnp.arange(2), labels], rtol=1e-6)


def test_a_classifier_config_trains_a_classifier_network():
  from configs.vp import digits_classifier

  config = parse_config(digits_classifier.get_config())
  assert config.training.task == "classifier" and isinstance(models.get_model(config), models.NoiseConditionalClassifier)
  raw = digits_classifier.get_config()
  raw.training.task = "score"
  with pytest.raises(ValueError, match="training.task='score' and model.name='classifier' disagree"):
    parse_config(raw)
