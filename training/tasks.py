"""What a run trains: a task is the objective the train step differentiates.

A task has one method, ``objective(params, batch, key, train) -> scalar loss``: ``batch`` is one batch as
``training.train.host_batch`` makes it (images [B, ...], or (images, labels [B]) when the run has classes),
``key`` the step's key, ``train`` whether the network runs in training mode (dropout on, label dropout on).
``training.step.make_train_step(task, optimizer, ...)`` turns any task into the sharded step; it knows
nothing of what the task computes.

* ``ScoreTask``: denoising score matching (``sde_lib.get_loss_fn``) of the run's one score function
  (``Setup.score_fn``); a class-conditional network (num_classes > 0) gets each label replaced by the null
  label ``num_classes`` with probability ``label_dropout`` when training (classifier-free guidance's joint
  training of the conditional and unconditional score, Ho & Salimans 2022, Alg. 1).
* ``ClassifierTask``: the cross-entropy of a noise-conditional classifier's logits at
  x_t ~ p_t(x_t | x_0), t ~ U(t_min, T) (or a ladder level), against the labels: the classifier of
  classifier guidance (Song et al. 2021, App. I.1).

``for_run(run)`` builds the task of a run's ``training.task`` (``TASKS``).
"""

from __future__ import annotations

from typing import Callable, Protocol

import jax
import jax.numpy as jnp
import optax

import models
import sde_lib


LABEL_DROPOUT_STREAM = 1       # fold_in(dropout key, .): the label-dropout draw, apart from the network's dropout


class Task(Protocol):
  def objective(self, params, batch, key: jax.Array, train: bool) -> jax.Array:
    """The scalar loss of ``params`` on ``batch`` with the randomness of ``key``."""


class ScoreTask:
  """Denoising score matching of a score network, optionally class-conditional.

  ``score_fn_of(params, train=, rngs=, class_labels=) -> score_fn`` is the run's one builder of its score
  function (``training.train.Setup.score_fn``). With ``num_classes > 0`` the batch is a pair
  (images, labels); the evaluation objective (``train=False``) keeps every label.
  """

  def __init__(self, sde: sde_lib.SDE, score_fn_of: Callable, *, continuous: bool = True, reduce_mean: bool = False,
               likelihood_weighting: bool = False, weighting: str | None = None, t_min: float = 1e-5,
               num_classes: int = 0, label_dropout: float = 0.0):
    self.score_fn_of = score_fn_of
    self.num_classes, self.label_dropout = int(num_classes), float(label_dropout)
    self.loss_fn = sde_lib.get_loss_fn(sde, continuous=continuous, reduce_mean=reduce_mean,
                                       likelihood_weighting=likelihood_weighting, weighting=weighting,
                                       t_min=t_min)

  @classmethod
  def from_run(cls, run) -> ScoreTask:
    tc = run.config.training
    return cls(run.sde, run.score_fn, continuous=tc.continuous, reduce_mean=tc.reduce_mean,
               likelihood_weighting=tc.likelihood_weighting, t_min=tc.t_min,
               weighting=None if tc.likelihood_weighting and tc.weighting == "score" else tc.weighting,
               num_classes=run.config.num_classes,
               label_dropout=tc.label_dropout)

  def objective(self, params, batch, key: jax.Array, train: bool) -> jax.Array:
    loss_key, dropout_key = jax.random.split(key)
    labels = None
    if self.num_classes:
      batch, labels = batch
      if train and self.label_dropout > 0:
        drop = jax.random.bernoulli(jax.random.fold_in(dropout_key, LABEL_DROPOUT_STREAM), self.label_dropout,
                                    labels.shape)
        labels = jnp.where(drop, self.num_classes, labels)
    score_fn = self.score_fn_of(params, train=train, rngs={"dropout": dropout_key}, class_labels=labels)
    return self.loss_fn(loss_key, score_fn, batch)


class ClassifierTask:
  """Cross-entropy of a ``models.NoiseConditionalClassifier`` (``apply_fn``) at perturbed inputs; the batch
  is a pair (images, labels)."""

  def __init__(self, sde: sde_lib.SDE, apply_fn: Callable, *, continuous: bool = True, t_min: float = 1e-5):
    self.sde, self.apply_fn, self.continuous, self.t_min = sde, apply_fn, continuous, t_min

  @classmethod
  def from_run(cls, run) -> ClassifierTask:
    tc = run.config.training
    return cls(run.sde, run.apply_fn, continuous=tc.continuous, t_min=tc.t_min)

  def objective(self, params, batch, key: jax.Array, train: bool) -> jax.Array:
    loss_key, dropout_key = jax.random.split(key)
    images, labels = batch
    p = sde_lib.perturb(loss_key, self.sde, images, t_min=self.t_min, continuous=self.continuous)
    logits = models.classifier.get_logits_fn(self.sde, self.apply_fn, params, continuous=self.continuous,
                                             train=train, rngs={"dropout": dropout_key})(p.x_t, p.t)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


TASKS = {"score": ScoreTask, "classifier": ClassifierTask}   # training.task -> its task


def for_run(run) -> Task:
  """The task of ``run.config.training.task`` (``run``: a ``training.train.Setup``), built from the run's SDE,
  network and training section."""
  return TASKS[run.config.training.task].from_run(run)


__all__ = ["Task", "ScoreTask", "ClassifierTask", "TASKS", "for_run", "LABEL_DROPOUT_STREAM"]
