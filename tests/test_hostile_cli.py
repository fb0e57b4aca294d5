"""Hostile checkpoint files through ``python -m tools.convert_checkpoint`` in its own process (exit 2, one
``error:`` line, no workdir, nothing run), and the converter's refusal of a workdir that already holds
checkpoints (tests/hostile_harness.py runs the children)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests import hostile as H
from tests.hostile_harness import (  # noqa: F401  (env: the pytest fixture)
    FIXTURE, MSGPACK_FIXTURE, _git_status, _outside_writes, env)


# --------------------------------------------------------------------------------- the CLI, for real
def _convert(env, checkpoint, workdir_arg, cwd, *extra, config="cifar10", timeout=300):
  return subprocess.run([sys.executable, "-m", "tools.convert_checkpoint", checkpoint, "--config", env.configs[config],
                         "--workdir", workdir_arg, *extra], cwd=cwd, env=env.child_env(cwd), capture_output=True,
                        text=True, timeout=timeout)


def _one_line_error(out):
  lines = out.stderr.strip().splitlines()
  return out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and not out.stdout


@pytest.mark.slow
def test_the_command_line_prints_one_error_line_for_hostile_files(env):
  """``python -m tools.convert_checkpoint`` in its own process: exit 2, one ``error:`` line, no workdir, nothing
  run. The step cases use the checkpoint's own network config, so only the step is wrong."""
  fx, ctx = env.fixture, env.ctx
  files = {
      "os_system": (H.write_pth(os.path.join(env.cases, "cli_os_system.pth"),
                                H.replace(fx.tree, ("optimizer",), H.Reduce(H.Global("os", "system"),
                                                                             (ctx.touch("cli_os_system"),))),
                                fx.storages, prefix=fx.prefix.rstrip("/")), "cifar10"),
      "garbage": (H.write(os.path.join(env.cases, "cli_garbage"), b"\x89PNG" + bytes(range(256)) * 8), "cifar10"),
      "step_negative": (fx.write(os.path.join(env.cases, "cli_step_negative.pth"), H.replace(fx.tree, ("step",), -1)),
                        "reduced"),
      "step_2pow31": (fx.write(os.path.join(env.cases, "cli_step_2pow31.pth"), H.replace(fx.tree, ("step",), 2**31)),
                      "reduced"),
      "msgpack_step": (H.write(os.path.join(env.cases, "cli_msgpack_step"),
                               H.msgpack_bytes({**H.read_msgpack_fixture(MSGPACK_FIXTURE),
                                                "step": np.asarray(-5, np.int32)})), "cifar10"),
  }
  failures = []
  for name, (path, config) in files.items():
    workdir = env.new_workdir("cli_" + name)
    before, git_before = env.snapshot(workdir), _git_status()
    out = _convert(env, path, "w", workdir, config=config)
    if not _one_line_error(out):
      failures.append(f"{name}: exit {out.returncode}, stderr {out.stderr[-400:]!r}, stdout {out.stdout[-200:]!r}")
    if os.path.exists(os.path.join(workdir, "w")):
      failures.append(f"{name}: the workdir was created")
    outside = _outside_writes(env, workdir, before, git_before)
    if outside:
      failures.append(f"{name}: wrote outside its workdir: {outside[:5]}")
  assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_the_converter_refuses_a_workdir_that_holds_checkpoints(env):
  """A workdir whose checkpoints/ is not empty is refused (one line, nothing changed) unless --add."""
  fx = env.fixture
  step3 = fx.write(os.path.join(env.cases, "step3.pth"), H.replace(fx.tree, ("step",), 3))
  cwd = env.new_workdir("refuse")
  first = _convert(env, step3, "w", cwd, config="reduced")
  assert first.returncode == 0, first.stderr[-2000:]
  assert os.listdir(os.path.join(cwd, "w", "checkpoints")) == ["3"]
  snapshot = sorted((p, os.path.getsize(os.path.join(d, p)) if os.path.isfile(os.path.join(d, p)) else -1)
                    for d, _, fs in os.walk(os.path.join(cwd, "w")) for p in fs)
  again = _convert(env, FIXTURE, "w", cwd, config="reduced")
  after = sorted((p, os.path.getsize(os.path.join(d, p)) if os.path.isfile(os.path.join(d, p)) else -1)
                 for d, _, fs in os.walk(os.path.join(cwd, "w")) for p in fs)
  assert _one_line_error(again), (again.returncode, again.stderr[-1500:])
  assert after == snapshot
  added = _convert(env, FIXTURE, "w", cwd, "--add", config="reduced")
  assert added.returncode == 0, added.stderr[-2000:]
  assert sorted(os.listdir(os.path.join(cwd, "w", "checkpoints"))) == ["3", "7"]
