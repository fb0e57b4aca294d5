"""Where the train step's time goes on XLA:CPU: jax.profiler's per-thunk times joined with the compiled HLO.

The step is the one ``--mode train`` runs (benchmarks/networks/train_step.py's ``build``: loss, gradient,
Adam, EMA), compiled with main.py's options (training/runtime.py CPU_OPTIONS) and run ``--steps`` times
inside ``jax.profiler.trace(..., create_perfetto_trace=True)``. The trace holds one "X" event per executed
thunk, named after its HLO instruction, with its duration in microseconds; ``compiled.as_text()`` gives each
instruction's opcode, shape, fusion kind, operands, metadata op_name and the fused computation it calls.
Thunks of the two Eigen threads may overlap, so the per-category times add up to more than the wall time.

Categories: conv/dot (convolutions, dots and fusions around one), transpose/copy (transpose, copy and
fusions whose name says so: layout changes), reduce-window, reduce (fusions with a reduce), elementwise
(other loop fusions), other. For the largest fusions: op_name, number of instructions in the fused
computation, and ``dup``: how many fusions of the module read the same operands (at least 80% of this one's,
when it has 8 or more), i.e. how many times XLA fused one elementwise chain into different consumers
instead of materialising it once.

    python -m benchmarks.networks.profile_step [--configs ...] [--steps 5] [--top 12] [--name profile_step]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax

from benchmarks.common import machine, write
from benchmarks.networks.train_step import build
from training import runtime

# name -> (config module, batch: None = the config's own)
CONFIGS = {
    "vp/digits": ("configs.vp.digits", None),
    "vp/cifar10 (DDPM++)": ("configs.vp.cifar10", 8),
    "ve/cifar10 (NCSN++)": ("configs.ve.cifar10", 8),
}
CATEGORIES = ["conv/dot", "transpose/copy", "reduce-window", "reduce", "elementwise", "other"]

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+?(?:\{[^}]*\})?) ([\w\-]+)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


def parse_hlo(text: str) -> tuple[dict, dict]:
  """(instructions, computations) of an HLO module's text. instructions: name -> dict(shape, opcode, kind,
  calls, op_name, operands, computation); computations: name -> list of its instruction names."""
  instrs, comps, current = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    m = _COMP.match(line)
    if m and " = " not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTR.match(line)
    if not m or current is None:
      continue
    name, shape, opcode, rest = m.groups()
    args = rest.split("), ")[0] if "), " in rest else rest.rstrip(")")
    operands = re.findall(r"%([\w.\-]+)", args)
    kind = re.search(r"kind=(\w+)", rest)
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    instrs[name] = dict(shape=shape.split("{")[0], opcode=opcode, kind=kind and kind.group(1),
                        calls=calls and calls.group(1), op_name=op_name and op_name.group(1), operands=operands,
                        computation=current)
    comps[current].append(name)
  return instrs, dict(comps)


def fused_opcodes(name: str, instrs: dict, comps: dict) -> list[str]:
  """Opcodes inside the computation ``name`` calls (recursively), parameters excluded."""
  callee = instrs[name]["calls"]
  out = []
  for inner in comps.get(callee, []) if callee else []:
    op = instrs[inner]["opcode"]
    if op != "parameter":
      out.append(op)
    if instrs[inner]["calls"]:
      out += fused_opcodes(inner, instrs, comps)
  return out


def category(name: str, instrs: dict, comps: dict) -> str:
  ins = instrs[name]
  ops = set(fused_opcodes(name, instrs, comps)) | {ins["opcode"]}
  if ops & {"convolution", "dot"} or ins["opcode"] == "custom-call":
    return "conv/dot"
  if "reduce-window" in ops:
    return "reduce-window"
  if "transpose" in name or "copy" in name or ins["opcode"] in ("transpose", "copy"):
    return "transpose/copy"
  if "reduce" in ops:
    return "reduce"
  if ins["opcode"] == "fusion":
    return "elementwise"
  return "other"


def duplicates(name: str, instrs: dict, fusions: list[str]) -> list[str]:
  """Other fusions reading at least 80% of ``name``'s operands (only for 8 or more operands)."""
  mine = set(instrs[name]["operands"])
  if len(mine) < 8:
    return []
  return [f for f in fusions if f != name and len(mine & set(instrs[f]["operands"])) >= 0.8 * len(mine)]


def thunk_times(trace_dir: str, instrs: dict, steps: int) -> dict:
  """Microseconds per step of every HLO instruction seen in the trace (summed over its events)."""
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")))[-1]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  times = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e["name"] in instrs:
      times[e["name"]] += e["dur"] / steps
  return times


def profile(module: str, batch: int | None, steps: int, options: dict, trace_dir: str, hlo_path: str | None = None):
  """(median untraced step seconds, batch, per-instruction us per step, instructions, computations); the
  compiled HLO text is also written to ``hlo_path`` when given."""
  step_fn, state, batches, run = build(module, batch)
  compiled = step_fn.lower(state, batches, run.step_key).compile(compiler_options=options)
  text = compiled.as_text()
  if hlo_path:
    with open(hlo_path, "w") as f:
      f.write(text)
  instrs, comps = parse_hlo(text)
  wall = []
  for i in range(steps + 2):                        # two warm-up calls, then timed ones
    t0 = time.perf_counter()
    state, metrics = compiled(state, batches, run.step_key)
    jax.block_until_ready(metrics)
    if i >= 2:
      wall.append(time.perf_counter() - t0)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      state, metrics = compiled(state, batches, run.step_key)
      jax.block_until_ready(metrics)
  return statistics.median(wall), batches.shape[1], thunk_times(trace_dir, instrs, steps), instrs, comps


def summarise(config: str, wall_s: float, batch: int, times: dict, instrs: dict, comps: dict, top: int):
  """(category rows, top-fusion rows) of one profiled step."""
  total = sum(times.values())
  by_cat = collections.Counter()
  counts = collections.Counter()
  for name, us in times.items():
    cat = category(name, instrs, comps)
    by_cat[cat] += us
    counts[cat] += 1
  cat_rows = [dict(config=config, batch=batch, step_ms=wall_s * 1e3, category=c, ms=by_cat[c] / 1e3,
                   share=by_cat[c] / total, thunks=counts[c]) for c in CATEGORIES]
  fusions = [n for n, i in instrs.items() if i["opcode"] == "fusion"]
  top_rows = []
  for name, us in times.most_common():
    if instrs[name]["opcode"] != "fusion" or category(name, instrs, comps) == "conv/dot":
      continue
    dups = duplicates(name, instrs, fusions)
    top_rows.append(dict(config=config, fusion=name, category=category(name, instrs, comps), ms=us / 1e3,
                         shape=instrs[name]["shape"], operands=len(instrs[name]["operands"]),
                         fused_ops=len(fused_opcodes(name, instrs, comps)), dup=len(dups),
                         dup_ms=sum(times.get(d, 0.0) for d in dups) / 1e3,
                         op_name=(instrs[name]["op_name"] or "").replace("jit(train_fn)/", "")))
    if len(top_rows) == top:
      break
  return cat_rows, top_rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--steps", type=int, default=5, help="profiled steps (times are per step)")
  parser.add_argument("--top", type=int, default=12, help="largest non-conv fusions listed per config")
  parser.add_argument("--name", default="profile_step")
  parser.add_argument("--hlo_dir", default=None, help="also write each config's compiled HLO text there")
  parser.add_argument("--options", default="{}", help="JSON of XLA compile options added to main.py's")
  args = parser.parse_args()
  options = dict(runtime.CPU_OPTIONS, **json.loads(args.options))
  cat_rows, top_rows = [], []
  for config in args.configs:
    with tempfile.TemporaryDirectory() as trace_dir:
      hlo = args.hlo_dir and os.path.join(args.hlo_dir, re.sub(r"\W+", "_", config) + ".hlo.txt")
      wall, batch, times, instrs, comps = profile(*CONFIGS[config], args.steps, options, trace_dir, hlo)
    cats, tops = summarise(config, wall, batch, times, instrs, comps, args.top)
    cat_rows += cats
    top_rows += tops
    for row in cats + tops:
      print(row, flush=True)
  load = os.getloadavg()
  notes = (f"`python -m benchmarks.networks.profile_step --steps {args.steps}` on {machine()}, load (1 min) "
           f"{load[0]:.1f}. The train step compiled with main.py's options {options}, {args.steps} steps under "
           "jax.profiler; ms = thunk time per step (the two Eigen threads overlap, so categories sum to more than "
           "step_ms, the untraced median step). Largest non-conv fusions: fused_ops = instructions in the fused "
           "computation, dup = other fusions reading >= 80% of the same operands (the same elementwise chain "
           "recomputed in another consumer) and dup_ms their time.")
  text = write(args.name, "Train step profile on XLA:CPU: time by category and the largest fusions",
               cat_rows + top_rows,
               ["config", "batch", "step_ms", "category", "ms", "share", "thunks", "fusion", "shape", "operands",
                "fused_ops", "dup", "dup_ms", "op_name"], notes)
  print(text)


if __name__ == "__main__":
  main()
