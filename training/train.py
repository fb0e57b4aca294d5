"""``--mode train``: the training loop (score_sde's run_lib.train, split into small pieces)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

import models
import samplers
import sde_lib
from data_lib.images import data_shape, get_dataset
from training import step as step_lib
from training import tasks
from training.checkpoint import Checkpointer
from schema import Config, as_config, sampler_options
from training.images import save_samples_picture
from training.state import (TrainState, create_train_state, get_optimizer, learning_rate_schedule,
                            train_state_initializer)


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss; the message names the step."""


@dataclasses.dataclass
class Setup:
  """What every mode builds from a typed config, once: the SDE, the network, the score function's
  parameterisation, the optimizer, the mesh, the data shape and the key streams."""

  config: Config
  sde: sde_lib.SDE
  model: nn.Module
  apply_fn: Callable
  optimizer: optax.GradientTransformation
  mesh: Mesh
  data_shape: tuple
  init_key: jax.Array
  step_key: jax.Array
  sample_key: jax.Array

  def score_fn(self, params, *, train: bool = False, rngs=None, class_labels=None):
    """``score_fn(x [B, ...], t [B]) -> [B, ...]`` of this run's network at ``params`` (the one builder of the
    run's score function: the training step, the samplers and the likelihood all call it). ``class_labels``
    [B]: the classes of a class-conditional network (None: its unconditional score)."""
    apply = self.apply_fn if class_labels is None else functools.partial(self.apply_fn, class_labels=class_labels)
    return models.get_score_fn(self.sde, apply, params, train=train, rngs=rngs, **models.score_options(self.config))

  def state_template(self) -> TrainState:
    """A state of the right structure (for restoring), built without running the network, replicated
    on this run's mesh. The sharding lets a checkpoint written by any number of processes and devices
    be restored by any other (orbax refuses the saved sharding when the topology differs)."""
    shapes = jax.eval_shape(train_state_initializer(self.model, self.optimizer, (1,) + self.data_shape), self.init_key)
    replicated = NamedSharding(self.mesh, P())
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


# The run's key streams: fold_in(key(seed), stream). Steps then fold in the step number, evaluation a
# checkpoint offset (training/evaluate.py), so no two uses of randomness share a key.
INIT_STREAM, STEP_STREAM, SAMPLE_STREAM = 0, 1, 2


def setup(config) -> Setup:
  """Builds the run's pieces from a typed ``Config`` (or a ConfigDict, parsed here); every bad field
  raises a ValueError naming it."""
  config = as_config(config)
  sde = sde_lib.get_sde(config.sde)
  run_fields = getattr(models.MODELS[config.model.name], "RUN_FIELDS", ())   # remat, compute dtype: same parameters
  model = models.get_model(config.model, **{name: getattr(config.training, name) for name in run_fields})
  mesh = step_lib.make_mesh()
  step_lib.check_batch_size(int(config.training.batch_size), mesh)
  base = jax.random.key(int(config.seed))
  shape = data_shape(config.data)
  return Setup(config, sde, model, models.make_apply_fn(model), get_optimizer(config.optim), mesh, shape,
               jax.random.fold_in(base, INIT_STREAM), jax.random.fold_in(base, STEP_STREAM),
               jax.random.fold_in(base, SAMPLE_STREAM))


def restore_or_create(run: Setup, checkpointer: Checkpointer) -> TrainState:
  replicated = NamedSharding(run.mesh, P())
  restored = checkpointer.restore_latest(run.state_template())
  if restored is None:
    state = create_train_state(run.model, run.optimizer, run.init_key, (1,) + run.data_shape)
  else:
    state = restored
  return jax.device_put(state, replicated)


def make_sample_fn(run: Setup, n: int):
  """jitted ``(key, params) -> (samples [n, H, W, C], nfe)`` with the configured sampler."""
  method, options = sampler_options(run.config)
  sampler = samplers.get_sampler(run.sde, (n,) + run.data_shape, method, options)
  return jax.jit(lambda key, params: sampler(key, run.score_fn(params)))


def make_step_fn(run: Setup, *, train: bool = True) -> Callable:
  """The (unjitted) training step of the run's task (``training.tasks.for_run``: its ``training`` section), or
  its evaluation loss (``train=False``)."""
  return step_lib.make_train_step(tasks.for_run(run), run.optimizer, ema_rate=run.config.ema.rate, train=train)


def host_batch(config, data, step: int, batch_size: int, rows=None):
  """Batch number ``step`` of ``data`` (its ``rows``, default all): images [B, ...], or (images, labels [B])
  when the run needs labels (a class-conditional network or a classifier: model.num_classes > 0).

  Raises:
    ValueError: a label outside 0 .. model.num_classes - 1.
  """
  rows = slice(None) if rows is None else rows
  images = data.batch(step, batch_size)[rows]
  num_classes = config.num_classes
  if not num_classes:
    return images
  labels = data.labels(data.indices(step, batch_size)[rows])
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"model.num_classes={num_classes} but the data has label {int(labels.max())}: labels must be in "
                     f"0 .. num_classes - 1")
  return images, labels


def stack_batches(batches: list):
  """[S] batches of ``host_batch`` -> one stacked batch [S, B, ...] (a pair of stacks for labelled ones)."""
  if isinstance(batches[0], tuple):
    return tuple(np.stack(part) for part in zip(*batches))
  return np.stack(batches)


def _crossed(prev: int, now: int, freq: int) -> bool:
  return freq > 0 and prev // freq != now // freq


def train(config, workdir: str) -> TrainState:
  """Trains until config.training.n_iters, resuming from the newest loadable checkpoint in workdir.

  Writes checkpoints (``checkpoints/``, ``checkpoints-meta/``), TensorBoard scalars
  (``tensorboard/``: loss, eval_loss, lr, grad_norm, steps_per_s) and, at each snapshot, a PNG grid
  of EMA samples (``samples/step_N.png``). Returns the final state.

  The data sources are opened first (data.path, and every image header of a FOLDER, checked in seconds):
  bad data fails before the network is built and before anything is written to workdir. Whatever stops
  the run, the checkpoints already started are finished (``Checkpointer.close``) before the error
  propagates.

  Raises:
    NonFiniteLossError: a NaN/inf loss; nothing after the last good checkpoint is written.
    ValueError, DatasetNotFoundError: bad data (data_lib.images.get_dataset), including an image whose
      body fails to decode mid-run (the message names the file).
  """
  config = as_config(config)
  train_data = get_dataset(config.data, "train", seed=int(config.seed))
  eval_data = get_dataset(config.data, "test", seed=int(config.seed) + 1)
  run = setup(config)
  tc = config.training
  os.makedirs(workdir, exist_ok=True)
  checkpointer = Checkpointer(workdir)
  writer = bar = None
  try:
    state = restore_or_create(run, checkpointer)
    start = int(state.step)
    if start:
      logging.info("resuming from step %d", start)
    batch_size, per_call, n_iters = tc.batch_size, tc.steps_per_call, tc.n_iters
    train_fn = step_lib.shard_step(make_step_fn(run), run.mesh)
    eval_fn = step_lib.shard_step(make_step_fn(run, train=False), run.mesh, train=False)
    lr_at = learning_rate_schedule(config.optim.lr, int(config.optim.warmup))
    writer = _writer(workdir)
    sample_fn = make_sample_fn(run, tc.snapshot_samples) if tc.snapshot_sampling and tc.task == "score" else None
    process, n_proc = jax.process_index(), jax.process_count()

    rows = step_lib.process_rows(batch_size, run.mesh)      # this process's rows of every global batch

    def host_batches(first: int, count: int, data):
      return stack_batches([host_batch(config, data, first + i, batch_size, rows) for i in range(count)])

    bar = tqdm(total=n_iters, initial=start, desc="train", disable=process != 0, dynamic_ncols=True)
    tick = [time.perf_counter(), start]                 # time and step of the previous log line

    def settle(first: int, count: int, metrics) -> None:
      """Waits for the steps first .. first + count - 1 and reports them: a non-finite loss stops the run, the
      bar advances, a log line at log_freq."""
      losses = np.asarray(metrics["loss"])
      if not np.all(np.isfinite(losses)):
        bad = first + int(np.argmin(np.isfinite(losses)))
        raise NonFiniteLossError(f"training loss is {losses[bad - first]} at step {bad}; stopped, the last "
                                 f"good checkpoint in {workdir} is kept")
      last = first + count
      bar.update(count)
      bar.set_postfix(loss=f"{losses[-1]:.4g}")
      if _crossed(first, last, int(tc.log_freq)):
        now = time.perf_counter()
        rate = (last - tick[1]) / max(now - tick[0], 1e-9)          # since the previous log line
        tick[:] = now, last
        _log(writer, last, loss=float(losses[-1]), lr=float(lr_at(last)),
             grad_norm=float(np.asarray(metrics["grad_norm"])[-1]), steps_per_s=rate)

    step, pending = start, None
    while step < n_iters:
      count = min(per_call, n_iters - step)
      state, metrics = train_fn(state, step_lib.put_batches(host_batches(step, count, train_data), run.mesh),
                                run.step_key)
      # The previous call's steps are checked while this one runs (JAX dispatches asynchronously), so the host's
      # work (the next batch, the bar) overlaps the device's: a few ms of a ~75 ms digits step on 2 CPU cores.
      if pending is not None:
        settle(*pending)
      pending = (step, count, metrics)
      prev, step = step, step + count
      evaluate_now = _crossed(prev, step, int(tc.eval_freq))
      preempt_now = _crossed(prev, step, int(tc.snapshot_freq_for_preemption))
      snapshot_now = _crossed(prev, step, int(tc.snapshot_freq)) or step == n_iters
      if not (evaluate_now or preempt_now or snapshot_now):
        continue
      settle(*pending)             # every step up to here is finite before anything is evaluated or saved
      pending = None
      if evaluate_now:
        eval_loss = eval_fn(state, step_lib.put_batches(host_batches(step, 1, eval_data), run.mesh), run.step_key)
        _log(writer, step, eval_loss=float(np.asarray(eval_loss["loss"])[0]))
      if preempt_now:
        checkpointer.save(step, state, snapshot=False)
      if snapshot_now:
        checkpointer.save(step, state, snapshot=True)
        if sample_fn is not None:
          # Every process runs the sampler (a computation on the replicated global EMA parameters needs
          # them all, and keeps them in step); process 0 writes the picture.
          x, nfe = sample_fn(jax.random.fold_in(run.sample_key, step), state.ema_params)
          if process == 0:
            path = save_samples_picture(x, config.data, os.path.join(workdir, "samples", f"step_{step}.png"))
            logging.info("step %d: %d EMA samples (NFE %d) in %s", step, x.shape[0], int(nfe), path)
  except BaseException:
    # An error (a corrupt image, a NaN loss, Ctrl-C) still finishes the checkpoints being written; a
    # failure while closing is logged, and the error that stopped the run is the one reported.
    try:
      _close(bar, checkpointer, writer)
    except Exception as e:
      logging.warning("closing the run after an error failed too: %s: %s", type(e).__name__, e)
    raise
  _close(bar, checkpointer, writer)
  return state


def _close(bar, checkpointer: Checkpointer, writer) -> None:
  if bar is not None:
    bar.close()
  checkpointer.close()                                      # waits for the checkpoints being written
  if writer is not None:
    writer.close()


def _writer(workdir: str):
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter

  return SummaryWriter(os.path.join(workdir, "tensorboard"))


def _log(writer, step: int, **scalars) -> None:
  logging.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in scalars.items()))
  if writer is not None:
    for k, v in scalars.items():
      writer.add_scalar(k, v, step)
    writer.flush()


def evaluation_state(run: Setup, workdir: str, step: int | None = None) -> TrainState:
  """The state of snapshot ``step`` (default: the newest loadable checkpoint of either kind)."""
  checkpointer = Checkpointer(workdir)
  try:
    if step is None:
      state = checkpointer.restore_latest(run.state_template())
    else:
      state = checkpointer.restore(step, run.state_template())
  finally:
    checkpointer.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.abspath(workdir)}: run --mode train first")
  return state


__all__ = ["train", "setup", "host_batch", "stack_batches", "Setup", "make_step_fn", "NonFiniteLossError",
           "evaluation_state", "make_sample_fn"]
