"""Multi-process training for real: two main.py processes on localhost (2 CPU devices each, gloo
collectives, jax.distributed over a free port) against one process with 4 devices.

The global mesh is the same 4 devices either way, each device holds the same 4 rows of the global
batch of 16, and every step uses fold_in(step_key, step) on every process, so the two runs compute
the same thing; only the all-reduce of the gradients differs (gloo across processes vs in-process),
in the order of float32 additions. The final parameters, EMA parameters (and optimizer state) must
agree to 1e-6 in max absolute difference (measured: 4e-9 / 7e-9): they are O(0.1-1) numbers, where
float32 resolution is 6e-8-1.2e-7, so 1e-6 is ~10 ulp; a wrong row, key or missed update would show
at the size of an Adam step, ~lr_k = 1e-5 k here (warm-up), since Adam's first steps move every
parameter by ~lr_k whatever its gradient's size. The logged losses, gradient norms and evaluation
losses (printed to 5 digits) must agree too; a wrong data mapping changes them at the 1e-2 level.
A resumed 2-process run (stopped at step 2, restarted) must equal the uninterrupted one exactly:
same topology, same programs.
"""

import glob
import os
import re
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.test_pipeline import ROOT, subprocess_env, tiny_config, tiny_flags
from training.checkpoint import Checkpointer
from training.train import setup

N_ITERS, STOP = 4, 2
EXTRA = ["--config.training.log_freq=2", "--config.training.eval_freq=2"]     # logs and eval loss, all processes
TIMEOUT = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(argv, log_path, devices):
  env = subprocess_env(devices)
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log


def _finish(procs, log_paths):
  """Waits for every process (killing all of them, by pid, if one hangs); returns (codes, logs)."""
  try:
    codes = [p.wait(timeout=TIMEOUT) for p, _ in procs]
  except subprocess.TimeoutExpired:
    for p, _ in procs:
      p.kill()
      p.wait()
    codes = [p.returncode for p, _ in procs]
  finally:
    for _, log in procs:
      log.close()
  logs = [open(path).read() for path in log_paths]
  return codes, logs


def _start_processes(argv, tmp_path, name, n=2, devices=2):
  port = _free_port()
  paths = [str(tmp_path / f"{name}.{i}.log") for i in range(n)]
  procs = [_start([*argv, f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={i}"],
                  paths[i], devices) for i in range(n)]
  return procs, paths


def _run_processes(argv, tmp_path, name, n=2, devices=2):
  codes, logs = _finish(*_start_processes(argv, tmp_path, name, n, devices))
  assert codes == [0] * n, "\n----\n".join(log[-3000:] for log in logs)
  return logs


def _main(workdir, n_iters):
  return [os.path.join(ROOT, "main.py"), *tiny_flags(workdir, n_iters), *EXTRA]


def _final_state(workdir, step):
  """Restored in this (single-device, single-process) test process from a checkpoint of any topology."""
  checkpointer = Checkpointer(workdir)
  try:
    return checkpointer.restore(step, setup(tiny_config()).state_template())
  finally:
    checkpointer.close()


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _logged_scalars(text, names):
  """{(step, name): value} from the run's "step N: name=value, ..." log lines."""
  out = {}
  for step, rest in re.findall(r"step (\d+): (\w+=.*)", text):
    for item in rest.split(", "):
      name, _, value = item.partition("=")
      if name in names:
        out[int(step), name] = float(value)
  return out


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path):
  single, whole, halves = (str(tmp_path / name) for name in ("single", "whole", "halves"))
  one = _start(_main(single, N_ITERS), str(tmp_path / "single.log"), devices=4)   # runs beside the others
  _run_processes(_main(whole, N_ITERS), tmp_path, "whole")
  # The first half also draws snapshot samples (every process samples, process 0 writes the picture);
  # sampling uses its own key stream, so the training state is unaffected.
  sampling = ["--config.training.snapshot_sampling=True", "--config.training.snapshot_samples=8",
              "--config.sampling.pc.num_steps=3"]
  _run_processes(_main(halves, STOP) + sampling, tmp_path, "halves_1")
  assert os.path.exists(os.path.join(halves, "samples", f"step_{STOP}.png"))
  resumed = _run_processes(_main(halves, N_ITERS), tmp_path, "halves_2")
  codes, logs = _finish([one], [str(tmp_path / "single.log")])
  assert codes == [0], logs[0][-3000:]
  # Both processes restored the step-2 checkpoint, and both wrote their part of every checkpoint
  # (orbax: process 0 the metadata, each process its own ocdbt.process_<i> tree).
  for log in resumed:
    assert f"resuming from step {STOP}" in log
  for step in (STOP, N_ITERS):
    for i in (0, 1):
      assert glob.glob(os.path.join(whole, "checkpoints", str(step), "*", f"*process_{i}")), (step, i)

  a, b, c = _final_state(single, N_ITERS), _final_state(whole, N_ITERS), _final_state(halves, N_ITERS)
  assert int(a.step) == int(b.step) == int(c.step) == N_ITERS
  params, ema, everything = _max_diff(a.params, b.params), _max_diff(a.ema_params, b.ema_params), _max_diff(a, b)
  print(f"1x4 vs 2x2: max |params diff| {params:.3g}, |EMA diff| {ema:.3g}, all state leaves {everything:.3g}")
  assert params <= 1e-6 and ema <= 1e-6 and everything <= 1e-6, (params, ema, everything)
  for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(c), strict=True):     # resumed == uninterrupted, exactly
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Training loss and gradient norm, and the evaluation loss (both processes on their rows of the
  # test batch), logged at steps 2 and 4 with 5 significant digits.
  logged = [_logged_scalars(text, ("loss", "grad_norm", "eval_loss"))
            for text in (logs[0], open(tmp_path / "whole.0.log").read())]
  assert sorted(logged[0]) == sorted(logged[1]) == sorted((k, n) for k in (2, 4) for n in ("loss", "grad_norm", "eval_loss"))
  for key, x in logged[0].items():
    assert abs(x - logged[1][key]) <= 2e-4 * abs(x), (key, logged)


DATA_CHECK = textwrap.dedent("""
    import sys, importlib, jax, numpy as np
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    from jax.experimental import multihost_utils
    from data_lib.images import get_dataset
    from training import step as step_lib
    config = importlib.import_module("configs.vp.digits").get_config()
    mesh = step_lib.make_mesh()
    rows = step_lib.process_rows(16, mesh)
    data = get_dataset(config.data, "train", seed=config.seed)
    local = np.stack([data.batch(s, 16)[rows] for s in (0, 7)])        # what host_batches loads
    assembled = multihost_utils.process_allgather(step_lib.put_batches(local, mesh), tiled=True)
    np.testing.assert_array_equal(assembled, np.stack([data.batch(s, 16) for s in (0, 7)]))
    print("ROWS", jax.process_index(), [int(r) for r in rows], [d.id for d in mesh.devices], flush=True)
""")


def test_each_process_loads_its_rows_and_they_assemble_the_global_batch(tmp_path):
  """Process i loads rows 8i .. 8i + 7 of each global batch of 16 (its two devices' shards); put_batches
  assembles them into exactly the batch a single process would use."""
  port = _free_port()
  paths = [str(tmp_path / f"data.{i}.log") for i in (0, 1)]
  procs = [_start(["-c", DATA_CHECK, f"127.0.0.1:{port}", str(i)], paths[i], devices=2) for i in (0, 1)]
  codes, logs = _finish(procs, paths)
  assert codes == [0, 0], "\n----\n".join(log[-3000:] for log in logs)
  for i, log in enumerate(logs):
    line = next(l for l in log.splitlines() if l.startswith("ROWS"))
    assert line.startswith(f"ROWS {i} {list(range(8 * i, 8 * i + 8))}"), line


LATE = 35      # seconds process 1 arrives late at its first collective: more than gloo's 30 s rendezvous

SKEW_CHECK = textwrap.dedent("""
    import sys, time, jax, numpy as np
    import main
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec
    from training.step import make_mesh
    address, pid, late = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    main._initialize_distributed(jax, dict(coordinator_address=address, num_processes=2, process_id=pid), 600)
    if pid == 1:
      time.sleep(late)                                 # as if still compiling its train step
    mesh = make_mesh()
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), np.full((2, 3), pid + 1.0))
    start = time.perf_counter()
    total = jax.jit(lambda x: x.sum(0), out_shardings=NamedSharding(mesh, PartitionSpec()))(x)
    gathered = multihost_utils.process_allgather(np.array([pid]))
    print("WAITED", pid, round(time.perf_counter() - start, 1), total.addressable_data(0).tolist(),
          gathered.ravel().tolist(), sep="|", flush=True)
""")


@pytest.mark.slow
def test_a_process_far_behind_at_its_first_collective_does_not_break_the_run(tmp_path):
  """Issue 22: on a busy machine a process still compiling 30 s after the other reached the train
  step's all-reduce ended the run ("Gloo context initialization failed: DEADLINE_EXCEEDED:
  GetKeyValue() timed out ... 30 s"; gloo's rendezvous timeout has no setting). main.py connects the
  collectives right after jax.distributed.initialize; here process 1 then arrives LATE s after
  process 0 at a new all-reduce over the mesh (and at process_allgather), and both succeed. (The same
  script calling jax.distributed.initialize alone fails with that error after 30 s.)"""
  port = _free_port()
  paths = [str(tmp_path / f"skew.{i}.log") for i in (0, 1)]
  procs = [_start(["-c", SKEW_CHECK, f"127.0.0.1:{port}", str(i), str(LATE)], paths[i], devices=2) for i in (0, 1)]
  codes, logs = _finish(procs, paths)
  assert codes == [0, 0], "\n----\n".join(log[-3000:] for log in logs)
  waited = {}
  for i, log in enumerate(logs):
    _, pid, seconds, total, gathered = next(l for l in log.splitlines() if l.startswith("WAITED")).split("|")
    waited[int(pid)] = float(seconds)
    assert total == "[6.0, 6.0, 6.0]" and gathered == "[0, 1]", log[-2000:]
  assert waited[0] > 31, waited            # process 0 really waited past gloo's 30 s for process 1


@pytest.mark.slow
def test_distributed_timeout_reaches_jax_distributed_initialize(tmp_path):
  """Process 0 of 2 alone, with --distributed_timeout=3: jax.distributed.initialize gives up after
  3 s (the coordination service's DEADLINE_EXCEEDED; jax then aborts the process) instead of waiting
  the default 600 s for process 1."""
  path = str(tmp_path / "alone.log")
  argv = [*_main(str(tmp_path / "alone"), 1), "--distributed_timeout=3",
          f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2", "--process_id=0"]
  proc, log = _start(argv, path, devices=2)
  try:
    code = proc.wait(timeout=120)
  finally:
    proc.kill()
    proc.wait()
    log.close()
  text = open(path).read()
  assert code != 0 and "DEADLINE_EXCEEDED" in text, (code, text[-2000:])


@pytest.mark.parametrize("extra, match", [
    (["--coordinator_address=localhost:1234"], r"--num_processes, --process_id missing"),
    (["--num_processes=2", "--process_id=0"], r"--coordinator_address missing"),
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=2"], r"--process_id=2 must be < --num_processes=2"),
    (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"], r"must be HOST:PORT"),
    (["--coordinator_address=localhost:1234", "--num_processes=0", "--process_id=0"], r"--num_processes=0"),
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=0", "--distributed_timeout=0"],
     r"--distributed_timeout=0: 0 is not a positive integer"),
    (["--multihost", "--distributed_timeout=-5"], r"--distributed_timeout=-5"),
])
def test_bad_distributed_flags_give_one_line_and_exit_2(tmp_path, extra, match):
  from tests.test_pipeline import run_main
  result = run_main(tiny_flags(str(tmp_path), 1) + extra)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and re.search(match, lines[0]), result.stderr[-1000:]
