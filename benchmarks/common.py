"""Timing and reporting helpers shared by the benchmark scripts (run from the repository root as
``python -m benchmarks.<family>.<name>``, which puts the repository on sys.path)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def machine() -> str:
  """One line naming the machine: CPU model and cores, or the accelerator."""
  dev = jax.devices()[0]
  if dev.platform != "cpu":
    return f"{dev.device_kind} ({dev.platform}), jax {jax.__version__}"
  model = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores, CPU only, jax {jax.__version__}"


def block(tree):
  return jax.tree.map(lambda v: v.block_until_ready() if hasattr(v, "block_until_ready") else v, tree)


def time_compiled(fn, *args, repeats: int = 3):
  """(compile seconds, median run seconds, last output) of a jitted fn: the first call minus a run."""
  t0 = time.perf_counter()
  out = block(fn(*args))
  first = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = block(fn(*args))
    runs.append(time.perf_counter() - t0)
  run = statistics.median(runs)
  return max(first - run, 0.0), run, out


def run_main(args: list[str]) -> float:
  """Runs ``python main.py ARGS`` from the repository root (failing on a non-zero exit); wall seconds."""
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "main.py"] + args, cwd=ROOT, check=True)
  return time.perf_counter() - t0


def eval_snapshot(config: str, workdir: str, folder: str, ckpt: int, seed: int, overrides: list[str]) -> tuple:
  """``main.py --mode eval`` of snapshot ``ckpt`` of ``workdir`` into ``folder`` (a subfolder of it) with the
  ``--config.*`` flags ``overrides``; skipped when ``folder/progress.json`` exists. Returns (its final
  metrics, wall seconds or "" when reused, reused)."""
  progress = os.path.join(folder, "progress.json")
  reused = os.path.exists(progress)
  seconds = ""
  if not reused:
    os.makedirs(folder, exist_ok=True)
    seconds = round(run_main([f"--config={config}", f"--workdir={workdir}", "--mode=eval",
                              f"--eval_folder={os.path.basename(folder)}", f"--config.eval.begin_ckpt={ckpt}",
                              f"--config.eval.end_ckpt={ckpt}", "--config.eval.enable_loss=False",
                              f"--config.seed={seed}"] + overrides), 1)
  return final_metrics(progress), seconds, reused


def final_metrics(progress_path: str) -> dict:
  """The metrics of the last evaluated checkpoint in an evaluation's progress.json."""
  with open(progress_path) as f:
    progress = json.load(f)
  return progress[max(progress, key=int)]


def run_per_sde(doc: str, sdes: dict, bench, root_name: str, options=None) -> list[dict]:
  """Command line ``[--sdes ...] [--root DIR]`` (plus what ``options(parser)`` adds); ``bench(sde, root,
  args)`` for each chosen SDE; the rows."""
  import argparse

  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--sdes", nargs="*", default=list(sdes), choices=list(sdes))
  parser.add_argument("--root", default=os.path.join(ROOT, "runs", root_name))
  if options:
    options(parser)
  args = parser.parse_args()
  rows = []
  for sde in args.sdes:
    rows.append(bench(sde, args.root, args) if options else bench(sde, args.root))
    print(rows[-1], flush=True)
  return rows


def merge_rows(name: str, rows: list[dict], key: str, fresh: set) -> list[dict]:
  """``rows`` (each stamped with this commit) plus the rows of results/NAME.json whose ``key`` is not in
  ``fresh`` (kept with the commit they were measured at), so rerunning one SDE keeps the others'."""
  path = os.path.join(RESULTS, name + ".json")
  for r in rows:
    r.setdefault("commit", commit())
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    old = json.load(f)
  kept = [dict(r, commit=r.get("commit", old.get("commit", ""))) for r in old["rows"] if r[key] not in fresh]
  return kept + rows


def sliced_wasserstein(x, y, key, n_projections: int = 128) -> float:
  """Sliced 2-Wasserstein distance between two equal-sized samples [n, D] (random unit directions)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  dirs = np.asarray(jax.random.normal(key, (n_projections, x.shape[1])), np.float64)
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  px, py = np.sort(x @ dirs.T, axis=0), np.sort(y @ dirs.T, axis=0)
  return float(np.sqrt(np.mean((px - py) ** 2)))


def commit() -> str:
  """The short git commit the benchmark ran at ("+ local changes" when the tree is dirty)."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + (" + local changes" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def write(name: str, header: str, rows: list[dict], columns: list[str], notes: str = "") -> str:
  """Writes results/NAME.json and results/NAME.md (a markdown table); returns the markdown."""
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, name + ".json"), "w") as f:
    json.dump({"machine": machine(), "commit": commit(), "rows": rows}, f, indent=1)

  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)

  lines = [f"# {header}", "", f"Machine: {machine()}", "", f"Commit: {commit()}", "", notes, "",
           "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(RESULTS, name + ".md"), "w") as f:
    f.write(text)
  return text
