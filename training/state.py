"""The train state, its optimizer, and its creation from a config."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import models


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: step (int32 scalar), params, their EMA, the optimizer state."""

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def learning_rate_schedule(lr: float, warmup: int):
  """lr * min(step / warmup, 1): score_sde's linear warm-up, then constant."""
  if warmup <= 0:
    return optax.constant_schedule(lr)
  return lambda step: lr * jnp.minimum(step / warmup, 1.0)


def get_optimizer(optim) -> optax.GradientTransformation:
  """Adam (decoupled weight decay) with warm-up and global-norm clipping, from config.optim.

  Raises:
    ValueError: an optimizer other than Adam, or negative rates.
  """
  if str(optim.optimizer).lower() != "adam":
    raise ValueError(f"optim.optimizer must be one of ['Adam'], got {optim.optimizer!r}")
  if optim.lr <= 0 or optim.weight_decay < 0:
    raise ValueError(f"optim.lr must be > 0 and optim.weight_decay >= 0, got lr={optim.lr!r}, "
                     f"weight_decay={optim.weight_decay!r}")
  schedule = learning_rate_schedule(optim.lr, int(optim.warmup))
  adam = optax.adamw(schedule, b1=optim.beta1, eps=optim.eps, weight_decay=optim.weight_decay)
  if optim.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
  return adam


def train_state_initializer(model, optimizer: optax.GradientTransformation, shape):
  """``create(key) -> TrainState`` of ``create_train_state``, unjitted: for tracing (``jax.eval_shape``) or
  building into a larger program."""
  init = models.initializer(model, shape)

  def create(key):
    params = init(key)
    # The EMA starts equal to the parameters but in buffers of its own (the step donates both).
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=optimizer.init(params))

  return create


def create_train_state(model, optimizer: optax.GradientTransformation, key: jax.Array, shape) -> TrainState:
  """Fresh parameters for inputs of ``shape`` [B, ...], their EMA (a copy) and the optimizer state, built in
  one program compiled with ``models.RUN_ONCE_COMPILER_OPTIONS`` (eagerly, the copies and the optimizer's
  zeros compiled one small program per leaf shape: ~1.6 s of the digits default's start). Call it outside
  ``jax.jit``; inside, use ``train_state_initializer``."""
  create = train_state_initializer(model, optimizer, shape)
  return jax.jit(create, compiler_options=models.RUN_ONCE_COMPILER_OPTIONS)(key)
