"""The train / eval pipeline: data, steps, resumption, sharding, checkpoints, the command line, FID."""

import importlib
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

import sde_lib
from data_lib.images import get_dataset
from evaluation import feature_statistics, frechet_distance, kernel_distance
from testkit.pipeline import ROOT, tiny_config, tiny_flags
from training import step as step_lib, tasks
from training.checkpoint import Checkpointer
from training.train import setup, train


def subprocess_env(devices=1):
  """The test process's environment for a child JAX process on ``devices`` CPU devices: the suite's own
  XLA_FLAGS (scripts/test.sh: backend optimisation off) and compilation cache are kept, so main.py runs
  compile as fast as the tests themselves and share their cached programs."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


def run_main(args, devices=1):
  env = subprocess_env(devices)
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], env=env, capture_output=True,
                        text=True, timeout=600)


# ------------------------------------------------------------------------------------------ data
def test_batches_are_a_pure_function_of_the_step():
  config = tiny_config()
  data = get_dataset(config.data, "train", seed=3)
  assert len(data) == 1500
  a, b = data.batch(7, 16), data.batch(7, 16)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (16, 8, 8, 1) and a.min() >= -1 and a.max() <= 1          # centred digits
  epoch = np.concatenate([data.indices(s, 100) for s in range(15)])           # one epoch = a permutation
  np.testing.assert_array_equal(np.sort(epoch), np.arange(1500))
  test = get_dataset(config.data, "test", evaluation=True)
  x = next(test.epoch_batches(297))
  assert len(x) == 297 and not np.allclose(x * 127.5 + 127.5, np.round(x * 127.5 + 127.5))   # dequantised


@pytest.mark.slow
def test_mock_cifar10_pipeline_with_inception_scores(tmp_path):
  """Mock CIFAR-10: train two steps, then evaluate with FID/KID/IS from an Inception with random weights."""
  from evaluation import inception
  from training.evaluate import evaluate
  config = tiny_config("configs.vp.cifar10")
  config.sampling.method = "pc"
  config.sampling.pc.update(predictor="euler_maruyama", corrector="none", num_steps=2)
  variables = inception.InceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  np.savez(tmp_path / "inception.npz", **inception.state_dict_from_variables(variables))
  config.eval.update(num_samples=4, batch_size=4, enable_bpd=False, inception_path=str(tmp_path / "inception.npz"),
                     inception_batch_size=4, fid_reference_examples=8, kid_reference_examples=8, begin_ckpt=1,
                     end_ckpt=1)
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    data = get_dataset(config.data, "train")
    x = data.batch(0, 4)
    assert x.shape == (4, 32, 32, 3) and x.min() >= -1 and x.max() <= 1
    state = train(config, workdir)
    assert int(state.step) == 2
    assert Checkpointer(workdir).snapshot_steps() == [2]
    metrics = evaluate(config, workdir)["2"]
    assert os.path.exists(os.path.join(workdir, "eval", "inception_reference_cifar10_train_8.npz"))
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0 and np.isfinite(metrics["kid"])
    assert 1.0 <= metrics["inception_score"] <= inception.NUM_CLASSES
    config.eval.inception_path = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
      evaluate(config, workdir, eval_folder="eval2")


# ------------------------------------------------------------------------------------------ steps
@pytest.mark.parametrize("name", ["configs.ve.digits", "configs.vp.digits", "configs.subvp.digits"])
@pytest.mark.slow
def test_training_on_digits_lowers_the_loss(name):
  config = tiny_config(name)
  config.optim.update(lr=3e-3, warmup=0)
  # score_sde's parameterisation on every SDE: its zero-initialised network starts at the full loss, so
  # 40 steps must cut it by 20%. (The VE digits config's EDM preconditioning starts lower, at 0.66, and
  # 40 tiny steps take it to 0.55: a 0.8 factor would not hold there, so it is not asserted.)
  config.model.parameterization = "reference"
  run = setup(config)
  data = get_dataset(config.data, "train")
  fn = step_lib.make_train_step(tasks.ScoreTask(run.sde, run.score_fn, reduce_mean=True), run.optimizer,
                                ema_rate=0.9)                                      # the probe's score_fn
  step = jax.jit(fn)
  from training.state import create_train_state
  state = create_train_state(run.model, run.optimizer, run.init_key, (1, 8, 8, 1))
  fixed = jnp.asarray(data.batch(0, 256))
  loss_fn = sde_lib.get_loss_fn(run.sde, reduce_mean=True)
  probe = lambda params: float(loss_fn(jax.random.key(5), run.score_fn(params), fixed))
  before = probe(state.params)
  for k in range(40):
    state, metrics = step(state, jnp.asarray(data.batch(k, 64))[None], run.step_key)
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
  assert probe(state.params) < 0.8 * before


@pytest.mark.slow
def test_ema_score_has_the_raw_score_scale_after_short_training():
  """After 60 steps the EMA network's score at t = T on the prior N(0, I) has the raw network's rms.

  The EMA starts at the untrained (near-zero output) parameters; without warm-up 0.999^60 = 94% of
  them remain, and the EMA score is a small fraction of the raw one (the defect that sent every
  deterministic sampler to saturated noise). Warmed up, the EMA averages the last ~10 steps, whose
  scores differ by a few percent.
  """
  config = tiny_config("configs.vp.digits")
  config.optim.update(lr=3e-3, warmup=0)
  run = setup(config)
  data = get_dataset(config.data, "train")
  fn = step_lib.make_train_step(tasks.ScoreTask(run.sde, run.score_fn, reduce_mean=True), run.optimizer,
                                ema_rate=0.999)
  step = jax.jit(fn)
  from training.state import create_train_state
  state = create_train_state(run.model, run.optimizer, run.init_key, (1, 8, 8, 1))
  for k in range(60):
    state, _ = step(state, jnp.asarray(data.batch(k, 64))[None], run.step_key)
  x = jax.random.normal(jax.random.key(3), (256, 8, 8, 1))
  t = jnp.full((256,), run.sde.T)
  rms = lambda params: float(jnp.sqrt(jnp.mean(jnp.square(run.score_fn(params)(x, t)))))
  raw, ema = rms(state.params), rms(state.ema_params)
  assert 0.5 < raw < 2.0                      # the exact score of N(0, I) at t = T has rms 1
  assert abs(ema / raw - 1) < 0.1, (raw, ema)


@pytest.mark.slow
def test_sharded_step_equals_single_device_step():
  """Four CPU devices: the batch-sharded step gives the single-device loss and parameters."""
  script = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh
from testkit.pipeline import tiny_config
from training import step as step_lib, tasks
from training.train import setup
from training.state import create_train_state
from data_lib.images import get_dataset
assert len(jax.devices()) == 4
config = tiny_config()
run = setup(config)
fn = step_lib.make_train_step(tasks.ScoreTask(run.sde, run.score_fn, reduce_mean=True), run.optimizer, ema_rate=0.999)
batch = get_dataset(config.data, 'train').batch(0, 16)[None]
out = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = Mesh(np.asarray(devices), ('data',))
  state = jax.device_put(create_train_state(run.model, run.optimizer, run.init_key, (1, 8, 8, 1)),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  state, metrics = step_lib.shard_step(fn, mesh)(state, step_lib.put_batches(batch, mesh), run.step_key)
  out.append((float(metrics['loss'][0]), np.asarray(jax.flatten_util.ravel_pytree(state.params)[0])))
import jax.flatten_util
print('LOSSDIFF', abs(out[0][0] - out[1][0]), 'PARAMDIFF', float(np.max(np.abs(out[0][1] - out[1][1]))))
"""
  env = subprocess_env(devices=4)
  result = subprocess.run([sys.executable, "-c", "import jax.flatten_util\n" + script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  line = next(l for l in result.stdout.splitlines() if l.startswith("LOSSDIFF"))
  loss_diff, param_diff = float(line.split()[1]), float(line.split()[3])
  assert loss_diff <= 1e-6 and param_diff <= 1e-6, line


# -------------------------------------------------------------------------------- checkpoints
def _final_state(workdir):
  run = setup(tiny_config())
  checkpointer = Checkpointer(workdir)
  state = checkpointer.restore_latest(run.state_template())
  checkpointer.close()
  return state


@pytest.mark.slow
def test_resumed_run_is_bit_identical(tmp_path):
  """4 steps uninterrupted == 2 steps, a fresh process, 2 more steps (params, EMA, optimizer, step)."""
  whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
  for workdir, stops in ((whole, [4]), (halves, [2, 4])):
    for n in stops:
      result = run_main(tiny_flags(workdir, n))
      assert result.returncode == 0, result.stderr[-2000:]
  a, b = _final_state(whole), _final_state(halves)
  assert int(a.step) == int(b.step) == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_main_keeps_its_compiled_programs_in_the_persistent_cache(tmp_path):
  """--compilation_cache_dir: a run stores what it compiled there (and '' stores nothing); the CPU options
  main.py adds to XLA_FLAGS leave the user's own flags in place."""
  from training import runtime

  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  for flag, workdir in ((f"--compilation_cache_dir={cache}", "a"), ("--compilation_cache_dir=", "b")):
    before = set(cache.rglob("*")) if cache.exists() else set()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *tiny_flags(tmp_path / workdir, 1), flag],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after = set(cache.rglob("*"))
    assert (len(after - before) > 0) == (workdir == "a")
  flags = runtime.cpu_xla_flags("--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type=dot")
  assert flags.split() == ["--xla_force_host_platform_device_count=2", "--xla_cpu_experimental_ynn_fusion_type=dot",
                           *[f"--{k}={v}" for k, v in runtime.CPU_OPTIONS.items() if k != "xla_cpu_experimental_ynn_fusion_type"]]
  assert set(runtime.cpu_xla_flags("").split()) == {f"--{k}={v}" for k, v in runtime.CPU_OPTIONS.items()}


def test_a_non_finite_loss_stops_the_run_naming_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  """Batch 8, the last before the preemption checkpoint of step 9, holds a NaN: the run stops with
  NonFiniteLossError naming step 8 (the loop checks a step's loss while the next one runs, but every step
  before a save), keeps the preemption checkpoint of step 6 and writes none later; resuming starts from 6."""
  import training.train as train_module

  real = train_module.get_dataset

  class PoisonedBatch:
    def __init__(self, data):
      self.data = data

    def __getattr__(self, name):
      return getattr(self.data, name)

    def batch(self, step, batch_size):
      x = self.data.batch(step, batch_size)
      return np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x) if step == 8 else x

  monkeypatch.setattr(train_module, "get_dataset",
                      lambda data, split, **kw: PoisonedBatch(real(data, split, **kw)) if split == "train" else real(data, split, **kw))
  config = tiny_config(n_iters=12, snapshot_freq=12, snapshot_freq_for_preemption=3, eval_freq=100)
  with pytest.raises(train_module.NonFiniteLossError, match=r"training loss is nan at step 8; stopped"):
    train(config, str(tmp_path))
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints-meta") if d.isdigit()) == [6]
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert int(_final_state(str(tmp_path)).step) == 6


@pytest.mark.slow
def test_corrupted_newest_checkpoint_is_skipped(tmp_path, caplog):
  config = tiny_config(n_iters=4)
  train(config, str(tmp_path))
  checkpointer = Checkpointer(str(tmp_path))
  assert checkpointer.snapshot_steps() == [2, 4]
  checkpointer.close()
  for kind in ("checkpoints", "checkpoints-meta"):                  # damage every copy of step 4
    for root, _, files in os.walk(tmp_path / kind / "4"):
      for f in files:
        with open(os.path.join(root, f), "wb") as handle:
          handle.write(b"\0garbage")
  with caplog.at_level(logging.WARNING):
    state = _final_state(str(tmp_path))
  assert int(state.step) == 2
  assert "step 4, which does not load" in caplog.text


@pytest.mark.slow
def test_evaluation_writes_metrics_and_resumes(tmp_path):
  from training.evaluate import evaluate
  config = tiny_config()
  config.sampling.method = "pc"
  config.sampling.pc.num_steps = 5
  config.eval.update(num_samples=8, batch_size=8, enable_bpd=True, bpd_max_examples=4)
  train(config, str(tmp_path))
  progress = evaluate(config, str(tmp_path))
  metrics = progress["2"]
  assert metrics["nfe"] == 5 + 1 and os.path.exists(metrics["samples_png"])
  assert np.isfinite(metrics["digits_fid"]) and metrics["digits_fid"] > metrics["digits_fid_floor_train_vs_test"]
  assert abs(sum(metrics["class_histogram"]) - 1) < 1e-6 and np.isfinite(metrics["bpd_test"])
  assert not os.path.exists(tmp_path / "eval" / "rounds_step_2")      # rounds are dropped once the step is done
  os.remove(metrics["samples_png"])
  assert evaluate(config, str(tmp_path)) == progress                   # a finished checkpoint is not redone
  assert not os.path.exists(metrics["samples_png"])


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("extra, devices, match", [
    (["--mode=dance"], 1, "flag --mode=dance"),
    (["--config=configs/absent.py"], 1, "cannot load the config file 'configs/absent.py'"),
    (["--config.training.sde=edm"], 1, "training.sde must be one of"),
    (["--config.model.name=unet3d"], 1, "model.name must be one of"),
    (["--config.sampling.method=magic", "--config.training.snapshot_sampling=True"], 1, "sampling.method must be one of"),
    (["--config.data.dataset=MNIST"], 1, "data.dataset must be one of"),
    (["--config.training.batch_size=6"], 4, r"training.batch_size must be divisible by the number of devices \(4\)"),
    (["--config.training.nonexistent=1"], 1, "nonexistent"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, extra, devices, match):
  import re
  result = run_main(tiny_flags(str(tmp_path), 1) + extra, devices=devices)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and re.search(match, lines[0]), result.stderr[-1000:]
  assert "Traceback" not in result.stderr


def test_missing_dataset_names_the_directory(tmp_path):
  result = run_main(tiny_flags(str(tmp_path), 1, "configs/vp/cifar10.py") + [f"--config.data.data_dir={tmp_path}/tfds"])
  assert result.returncode == 2
  assert f"not prepared in {tmp_path}/tfds" in result.stderr and "tfds build cifar10" in result.stderr


# ------------------------------------------------------------------------------------ metrics
def test_frechet_and_kernel_distances_have_their_closed_forms():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(4000, 6))
  assert abs(frechet_distance(*feature_statistics(f), *feature_statistics(f))) < 1e-6
  shift = np.array([1.0, -2.0, 0, 0, 0.5, 0])
  assert abs(frechet_distance(*feature_statistics(f), *feature_statistics(f + shift)) - shift @ shift) < 1e-6
  # Gaussians with covariances I and 4 I: trace(I + 4I - 2 * 2I) = d.
  mu = np.zeros(6)
  assert abs(frechet_distance(mu, np.eye(6), mu, 4 * np.eye(6)) - 6.0) < 1e-9
  assert abs(kernel_distance(f[:2000], f[2000:])) < 0.05
  assert kernel_distance(f[:2000], f[2000:] + shift) > 0.5


# ------------------------------------------------------------------------------------------ toy
@pytest.mark.slow
def test_toy_mixture_pipeline(tmp_path):
  """configs/toy/vp.py (MLP on the 2-D mixture), a few steps: scatter plots at snapshots; evaluation
  reports the samples' mode metrics beside the noise floor of exact samples, and the model's and the
  exact test NLL. (How well the full run learns is measured by benchmarks/pipeline/toy.py.)"""
  from data_lib.toy import get_mixture
  from training.evaluate import evaluate
  config = importlib.import_module("configs.toy.vp").get_config()
  config.training.update(n_iters=4, snapshot_freq=4, snapshot_samples=64)
  config.sampling.pc.num_steps = 10
  config.eval.update(num_samples=256, batch_size=256, bpd_max_examples=16)
  train(config, str(tmp_path))
  assert os.path.exists(tmp_path / "samples" / "step_4.png")
  metrics = evaluate(config, str(tmp_path))["4"]
  assert metrics["nfe"] == 11 and metrics["samples_png"].endswith(".png")
  for name in ("tv", "mean_err", "std_err"):                  # four steps have learned nothing yet
    assert 0 < metrics[f"mode_{name}_floor_p99"] < metrics[f"mode_{name}"]
  test = next(get_dataset(config.data, "test", seed=config.seed).epoch_batches(16))
  exact = -float(np.mean(get_mixture(config.data).log_prob_t(test, jnp.full((16,), 1e-5), setup(config).sde))) / 2
  assert metrics["nll_test_exact"] == pytest.approx(exact, rel=1e-5)
  assert np.isfinite(metrics["nll_test"]) and metrics["nll_test"] > metrics["nll_test_exact"]


def test_sampling_rounds_resume_after_a_kill(tmp_path):
  """Rounds of samples are saved as they finish; a rerun reuses them and redoes only the missing ones."""
  from training.evaluate import draw_samples
  calls = []

  def sample_fn(key, params):
    calls.append(int(jax.random.randint(key, (), 0, 10**6)))
    return jax.random.normal(key, (4, 2)) + params, 7

  rounds = str(tmp_path / "rounds")
  first, nfe = draw_samples(sample_fn, 1.0, 10, 4, jax.random.key(0), rounds_dir=rounds)
  assert first.shape == (10, 2) and nfe == 7 and len(calls) == 3
  os.remove(os.path.join(rounds, "round_1.npz"))                    # killed while round 1 was running
  again, _ = draw_samples(sample_fn, 1.0, 10, 4, jax.random.key(0), rounds_dir=rounds)
  assert len(calls) == 4 and calls[3] == calls[1]                   # only round 1 redone, with its own key
  np.testing.assert_array_equal(again, first)


def test_begin_and_end_ckpt_select_snapshots():
  from training.evaluate import select_snapshots
  steps = [1000, 2000, 2500]                                        # the last: a final save off the period
  assert select_snapshots(steps, 1000, 1, 3) == steps
  assert select_snapshots(steps, 1000, 2, 2) == [2000]
  assert select_snapshots(steps, 1000, 3, 26) == [2500]
  with pytest.raises(ValueError, match=r"eval.begin_ckpt=9, eval.end_ckpt=26 select no snapshot.*\[1, 2, 3\]"):
    select_snapshots(steps, 1000, 9, 26)
