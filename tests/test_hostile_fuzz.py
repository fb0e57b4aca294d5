"""The seeded mutation fuzzer over the valid fixtures (tests/hostile_fuzz.py makes the mutants,
tests/hostile_harness.py runs the children): each mutant raises CheckpointError or reads unchanged.

More fuzzing: ``HOSTILE_FUZZ_SEED`` and ``HOSTILE_FUZZ_N`` (mutants per fixture and mode, default 100).
"""

import json
import os
import time

import pytest

from tests import hostile as H
from tests.hostile_harness import (  # noqa: F401  (env: the pytest fixture)
    DATA, LIMIT_BYTES, TIME_LIMIT, _diff, env, run_child)


# ------------------------------------------------------------------------------------------- the fuzzer
FUZZ_SEED = int(os.environ.get("HOSTILE_FUZZ_SEED", "0"))
FUZZ_N = int(os.environ.get("HOSTILE_FUZZ_N", "100"))
FUZZ_TARGETS = [("pytorch_r_ncsnpp_residual.pth", "raw"), ("pytorch_r_ncsnpp_residual.pth", "pickle"),
                ("pytorch_r_ddpmpp_ddpmblock.pth", "raw"), ("pytorch_r_ddpmpp_ddpmblock.pth", "pickle"),
                ("jax_r_ncsnpp_residual_checkpoint_1", "msgpack"), ("jax_r_ddpmpp_ddpmblock_checkpoint_1", "msgpack")]


def _names_shapes_dtypes(table):
  return {k: v[:2] for k, v in (table or {}).items()}


def judge_mutant(mode, res, want) -> tuple[list[str], str]:
  """(problems, how the table changed if a re-zipped pickle mutant was accepted as another checkpoint)."""
  outcome = res.get("outcome")
  if outcome in ("crash", "hang"):
    return [f"{outcome}: {json.dumps(res)[:400]}"], ""
  problems = []
  if res["wall"] >= TIME_LIMIT:
    problems.append(f"took {res['wall']:.2f} s")
  if res["rss_growth"] >= LIMIT_BYTES:
    problems.append(f"peak RSS grew by {res['rss_growth'] >> 20} MiB")
  if outcome == "raised":
    if not (res["checkpoint_error"] and res["starts_with_path"]):
      problems.append(f"raised {res['type']}: {res['message'][:200]!r}")
    return problems, ""
  table = res["table"]
  same = (table["params"], table["ema"], table["step"]) == (want["params"], want["ema"], want["step"])
  if table["problems"]:
    problems.append(f"accepted, breaking read_checkpoint's contract: {table['problems']}")
  elif mode == "raw" and not same:
    problems.append(f"accepted a changed tensor table: {_diff(table['params'], want['params'])}")
  elif mode == "msgpack":
    got = _names_shapes_dtypes(table["params"]), _names_shapes_dtypes(table["ema"])
    expected = _names_shapes_dtypes(want["params"]), _names_shapes_dtypes(want["ema"])
    if got != expected:
      problems.append(f"accepted changed names/shapes/dtypes: params {_diff(got[0], expected[0])} / "
                      f"ema {_diff(got[1], expected[1])}")
  elif mode == "pickle" and not same:
    return problems, _diff(table["params"], want["params"])
  return problems, ""


@pytest.mark.parametrize("kind", ["pth", "msgpack"])
@pytest.mark.slow
def test_fuzzed_fixtures_raise_checkpoint_error_or_read_unchanged(env, kind):
  """Seeded mutations of the valid fixtures' bytes (bit flips, byte overwrites, truncations, chunk
  copies and deletions; for .pth mostly inside data.pkl, and also pickle mutations re-zipped with valid
  CRCs so they reach the unpickler). Each mutant raises CheckpointError or reads to the fixture's own
  tensor table: the same names, shapes, dtypes and values for a zip member mutation (the zip's CRC
  covers them), the same names, shapes and dtypes for msgpack (no checksum). A re-zipped pickle
  mutation may be a different valid checkpoint (a changed name or size is undetectable): it must keep
  read_checkpoint's contract, and the count of such acceptances is reported."""
  targets = [(f, m) for f, m in FUZZ_TARGETS if (m == "msgpack") == (kind == "msgpack")]
  tasks = [{"task": f"baseline:{f}", "entry": "read_checkpoint", "path": os.path.join(DATA, f)} for f, _ in targets]
  tasks += [{"task": f"{f}:{m}:{i}", "entry": "fuzz", "fixture": os.path.join(DATA, f), "mode": m, "seed": FUZZ_SEED,
             "index": i} for f, m in targets for i in range(FUZZ_N)]
  t0 = time.monotonic()
  results, outside = run_child(env, tasks, f"fuzz_{kind}")
  elapsed = time.monotonic() - t0
  failures, accepted_changed, counts = [], [], {"raised": 0, "ok": 0}
  for f, m in targets:
    base = results[f"baseline:{f}"]
    assert base["outcome"] == "ok" and not base["table"]["problems"], f"the clean fixture {f} does not read: {base}"
    for i in range(FUZZ_N):
      task = f"{f}:{m}:{i}"
      res = results[task]
      outcome = res.get("outcome")
      if outcome in counts:
        counts[outcome] += 1
      problems, changed = judge_mutant(m, res, base["table"])
      if changed:
        accepted_changed.append(f"{task} ({res['mutation']}): {changed}")
      if problems:
        data, how = H.mutant(os.path.join(DATA, f), m, FUZZ_SEED, i)
        keep = H.write(os.path.join(env.root, f"failing_{f}_{m}_{i}"), data)
        failures.append(f"{task} [{how}; saved as {keep}]: " + " | ".join(problems))
  report = (f"fuzz {kind}: {len(tasks) - len(targets)} mutants in {elapsed:.1f} s, {counts}, "
            f"{len(failures)} failures, {len(accepted_changed)} re-zipped pickle mutants accepted as a different "
            "valid checkpoint" + "".join(f"\n  {x}" for x in failures[:40])
            + "".join(f"\n  (accepted) {x}" for x in accepted_changed[:10]))
  print(report)
  assert not failures and not outside, report + (f"\n  written outside: {outside[:10]}" if outside else "")
