"""Hostile checkpoint files (issue 22, item 6): every class of attack, through every public entry point,
in child processes under a memory and a time limit, plus a seeded mutation fuzzer over the valid fixtures.

The child processes and their environment are in tests/hostile_harness.py; the converter's command
line in real processes is tested in tests/test_hostile_cli.py, the fuzzer in tests/test_hostile_fuzz.py.

What each entry point must do with a hostile file (``tests/hostile.py`` lists the cases):
  * ``safeio.torch_pickle.load_pth``, ``models.read_checkpoint``, ``models.load_score_sde_checkpoint``,
    ``evaluation.inception.read_state_dict``: raise ``models.CheckpointError`` whose message starts
    with the file's path (a ValueError), within 2 s and 1 GiB;
  * ``python -m tools.convert_checkpoint`` (run in-process through ``tools.convert_checkpoint.main``; a few in real
    processes in tests/test_hostile_cli.py): exit 2 with exactly one line on stderr starting with ``error:``, nothing on
    stdout, and no workdir created;
  * cases marked ``ok`` / ``either`` are valid or harmless files that may (must) be read: then the
    result must be exactly the expected tensor table, and ``read_checkpoint``'s documented contract
    (step in [0, 2**31), str keys, floating arrays) must hold.
A flax msgpack file has no checksum, so a flipped byte in a parameter's name reads as another valid
name; these tests require what catches it: a score_sde State whose raw (``optimizer.target``) and EMA
(``params_ema``) trees differ in names, shapes or dtypes is refused (the ``mp_*_differs`` cases and the
msgpack fuzzer, whose mutations go mostly to keys and array headers).

Against an older tree: ``git archive <commit> | tar -x -C DIR`` and ``HOSTILE_CODE_ROOT=DIR``.
"""

import json

import pytest

from tests import hostile as H
from tests.hostile_harness import (  # noqa: F401  (env: the pytest fixture)
    LIMIT_BYTES, MSGPACK_FIXTURE, TIME_LIMIT, _diff, env, run_child, tasks_for)


# --------------------------------------------------------------------------------------------- judging
def _strip(table):
  return {k[len("module."):] if k.startswith("module.") else k: v for k, v in table.items()}


def _raised_right(res, path):
  if res.get("outcome") != "raised":
    return None
  if not res["checkpoint_error"]:
    return f"raised {res['type']} (mro {res['mro'][:4]}), not CheckpointError: {res['message'][:200]!r}"
  if not res["starts_with_path"]:
    return f"CheckpointError whose message does not start with the path: {res['message'][:200]!r}"
  return ""


def judge(env, case, entry, res, fixture_table) -> list[str]:
  """The problems with one task's result (empty when it did what the contract says)."""
  expect = case.expect[entry]
  outcome = res.get("outcome")
  if outcome in ("crash", "hang"):
    return [f"{outcome}: {json.dumps(res)[:600]}"]
  problems = []
  converted = entry == "load_score_sde" and outcome == "ok" or entry == "cli" and (res.get("cli") or {}).get("rc") == 0
  if res["wall"] >= TIME_LIMIT and not converted:     # (converting a valid file builds the network: not a read)
    problems.append(f"took {res['wall']:.2f} s (cpu {res['cpu']:.2f} s)")
  if res["rss_growth"] >= LIMIT_BYTES:
    problems.append(f"peak RSS grew by {res['rss_growth'] >> 20} MiB")
  if res.get("summary_error"):
    problems.append(f"result could not be summarised: {res['summary_error']}")
  if entry == "cli":
    if outcome != "ok":
      return problems + [f"the CLI raised {res['type']}: {res['message'][:200]!r} (a traceback for the user)"]
    cli = res["cli"]
    lines = cli["stderr"].strip().splitlines()
    failed = cli["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error:") and not cli["stdout"]
    if failed and cli["workdir_exists"]:
      problems.append("the CLI failed but created the workdir")
    if expect == H.ERROR and not failed:
      problems.append(f"the CLI returned {cli['rc']} with stderr {cli['stderr'][-300:]!r}, "
                      f"stdout {cli['stdout'][:200]!r}")
    if expect == H.EITHER and not failed and cli["rc"] != 0:
      problems.append(f"the CLI returned {cli['rc']} with stderr {cli['stderr'][-300:]!r}")
    return problems
  wrong = _raised_right(res, case.path)
  if wrong:
    problems.append(wrong)
  if outcome == "ok":
    if expect == H.ERROR:
      problems.append(f"accepted (expected CheckpointError): {json.dumps(res.get('table'))[:300]}")
    else:
      problems += _check_ok(env, case, entry, res, fixture_table)
  elif expect == H.OK:
    problems.append("expected to read")
  if case.clean:
    problems += _check_clean(res, fixture_table)
  return problems


def _check_ok(env, case, entry, res, fixture_table):
  problems, table = list(res.get("check_problems") or []), res.get("table") or {}
  if entry == "read_checkpoint" and table.get("problems"):
    problems.append(f"read_checkpoint's contract broken: {table['problems']}")
  if case.check == "fixture":
    if entry == "load_pth" and table != fixture_table:
      problems.append(f"tensor table differs from the fixture's: {_diff(table, fixture_table)}")
    if entry == "read_checkpoint" and table.get("params") != _strip(fixture_table["model"]):
      problems.append(f"params differ from the fixture's: {_diff(table.get('params'), _strip(fixture_table['model']))}")
  if case.check in ("expected", "state_dict") and entry in ("load_pth", "inception"):
    if table.get("model") != case.expected:
      problems.append(f"tensor table differs: {_diff(table.get('model'), case.expected)}")
  if case.check == "expected" and entry == "read_checkpoint" and table.get("params") != _strip(case.expected):
    problems.append(f"params differ: {_diff(table.get('params'), _strip(case.expected))}")
  if case.check == "msgpack_table" and entry == "read_checkpoint":
    want = H.msgpack_table(H.read_msgpack_fixture(MSGPACK_FIXTURE))
    got = {"step": table.get("step"), "params": table.get("params"), "ema": table.get("ema")}
    if got != {**want, "step": repr(want["step"])}:
      problems.append(f"msgpack table differs: {_diff(got, want)}")
  return problems


def _check_clean(res, fixture_table):
  problems = []
  for clean in res.get("clean") or []:
    if "error" in clean:
      problems.append(f"the clean fixture read next failed: {clean['error']}")
    elif clean["raw"] != fixture_table:
      problems.append(f"the clean fixture read next came out changed: {_diff(clean['raw'], fixture_table)}")
    elif clean["checkpoint"]["params"] != _strip(fixture_table["model"]):
      problems.append("the clean fixture's read_checkpoint params came out changed")
  return problems


def run_class(env, name):
  cases = H.CLASSES[name](env.ctx)
  tasks = tasks_for(cases)
  results, outside = run_child(env, tasks, name)
  table = H.fixture_table(env.fixture)
  failures = {}
  for case in cases:
    for entry in case.expect:
      res = results[f"{case.id}:{entry}"]
      problems = judge(env, case, entry, res, table)
      if problems and any(p.startswith("took") for p in problems) and len(problems) == 1:
        # a slow read on a loaded machine: once more in a fresh child before calling it slow
        again, more = run_child(env, [t for t in tasks if t["task"] == f"{case.id}:{entry}"], name + "_retry")
        outside += more
        problems = judge(env, case, entry, again[f"{case.id}:{entry}"], table)
      if problems:
        failures[f"{case.id}:{entry}"] = problems
  poisoned = [t for t, ps in failures.items() if any("clean fixture" in p for p in ps)]
  if poisoned:
    # In one process the first case that changed the next read changes every later one too: name it,
    # then read each case alone in a fresh process to say which of them change the next read by themselves.
    failures["(one process)"] = [f"the clean fixture first came out changed after {poisoned[0]}"]
    for case in cases:
      alone, more = run_child(env, [t for t in tasks if t["task"].startswith(case.id + ":")], name + "_alone")
      outside += more
      for entry in case.expect:
        problems = judge(env, case, entry, alone[f"{case.id}:{entry}"], table)
        if problems:
          failures[f"{case.id}:{entry} (alone)"] = problems
  slowest = max((r.get("wall", 0), k) for k, r in results.items())
  return cases, results, failures, outside, slowest


def _report(name, cases, failures, outside, slowest):
  lines = [f"{name}: {len(failures)} of {sum(len(c.expect) for c in cases)} tasks failed "
           f"(slowest {slowest[1]} {slowest[0]:.2f} s)"]
  for task, problems in sorted(failures.items()):
    lines.append(f"  {task}: " + " | ".join(problems))
  if outside:
    lines.append(f"  written outside the child's workdir: {outside[:10]}")
  return "\n".join(lines)


CLASS_NAMES = ["positive", "out_of_bounds", "bombs", "cross_file", "code_execution", "malformed", "msgpack"]


@pytest.mark.parametrize("name", CLASS_NAMES)
@pytest.mark.slow
def test_hostile_files_end_with_the_documented_error(env, name):
  """Every case of the class through every entry point: the documented error (or, for valid files,
  exactly the expected tensors), within 2 s and 1 GiB, nothing written outside the child's workdir."""
  cases, results, failures, outside, slowest = run_class(env, name)
  report = _report(name, cases, failures, outside, slowest)
  print(report)
  assert not failures and not outside, report
