"""Our NCSN++ / DDPM++ against score_sde_pytorch's own, forward and forward + backward, in one process tree.

The reference runs in a worker process (benchmarks/networks/_reference_torch.py) under a Python that has torch,
on an exported copy of yang-song/score_sde_pytorch; this process times ours. The two never run at the
same time: each round times one call of every variant of ours, then one call of the reference, so slow
and fast spells of a shared machine fall on both. Reported per configuration and mode: the median of
the rounds for each side, the median of the per-round ratios ours / reference (the figure the issue's
target, <= 0.67, is about) and our compile time (lower + compile of the whole jitted function).

Variants of ours are XLA compile options (``lowered.compile(compiler_options=...)``) and the convolutions'
gradient (``training.backward``), so one process compares them on the same inputs: ``default`` (XLA's own
defaults), ``tuned`` (``runtime.CPU_OPTIONS``, main.py's options on CPU), ``tuned_o1``, ``tuned_taps``
(models/conv.py's written-out VJP in every conv3x3 / conv1x1) and ``tuned_materialised`` (each conv output's
cotangent computed once, ``models.cotangent.materialise_cotangent``: what main.py trains with on CPU) and
``default_materialised`` (the same with XLA's default options). The cost
model is reported too: XLA's flop count of our program,
the rate it reached, and that rate as a fraction of the machine's best dense rate (benchmarks/networks/
peak.py, measured first in the same process).

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy ml_collections scipy
    (any Python with torch, e.g. an existing /work/torchenv/bin/python)
    mkdir -p /tmp/ref_pt && git -C <mirror of yang-song/score_sde_pytorch> archive HEAD | tar -x -C /tmp/ref_pt
    python -m benchmarks.networks.networks_vs_reference --torch_python /tmp/torchvenv/bin/python --ref /tmp/ref_pt

Without --torch_python / --ref (or when the worker cannot import torch or the reference) the reference
columns are skipped with a message and ours are still timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp

import models
import schema
from benchmarks.common import machine, write
from benchmarks.networks import peak
from benchmarks.networks.networks import inputs, load_config, programs
from training import runtime

HERE = os.path.dirname(os.path.abspath(__file__))
# ours (configs module) -> the reference config it reproduces (same architecture and parameter count)
CONFIGS = {
    "NCSN++ (ve/cifar10)": ("configs.ve.cifar10", "configs.ve.cifar10_ncsnpp_continuous"),
    "DDPM++ (vp/cifar10)": ("configs.vp.cifar10", "configs.vp.cifar10_ddpmpp_continuous"),
    "NCSN++ deep (ve/cifar10_deep)": ("configs.ve.cifar10_deep", "configs.ve.cifar10_ncsnpp_deep_continuous"),
    "DDPM++ deep (vp/cifar10_deep)": ("configs.vp.cifar10_deep", "configs.vp.cifar10_ddpmpp_deep_continuous"),
}
# name -> (the convolutions' gradient, a layers.BACKWARDS name; XLA compile options)
VARIANTS = {"default": ("xla", {}), "tuned": ("xla", dict(runtime.CPU_OPTIONS)),
            # LLVM at -O1 instead of -O2: compile time is mostly LLVM's (issue 12's <= 10 s target)
            "tuned_o1": ("xla", dict(runtime.CPU_OPTIONS, xla_backend_optimization_level=1)),
            # models/conv.py's written-out VJP in every conv3x3 / conv1x1 (same parameters, same values)
            "tuned_taps": ("taps", dict(runtime.CPU_OPTIONS)),
            # each conv output's cotangent computed once (models.layers.materialise_cotangent): main.py on CPU
            "tuned_materialised": ("materialised", dict(runtime.CPU_OPTIONS)),
            "default_materialised": ("materialised", {})}


class Reference:
  """The torch worker: one JSON line per command (see _reference_torch.py)."""

  def __init__(self, python: str, ref: str):
    self.proc = subprocess.Popen([python, os.path.join(HERE, "_reference_torch.py"), ref], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)

  def ask(self, **cmd) -> dict:
    self.proc.stdin.write(json.dumps(cmd) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"the reference worker exited (status {self.proc.wait()})")
    return json.loads(line)

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self.proc.stdin.flush()
      self.proc.wait()


def start_reference(args):
  if not (args.torch_python and args.ref):
    print("reference skipped: give --torch_python (a Python with torch) and --ref (an exported "
          "yang-song/score_sde_pytorch); see the module docstring", flush=True)
    return None
  if not os.path.isdir(os.path.join(args.ref, "models")):
    print(f"reference skipped: {args.ref!r} holds no score_sde_pytorch export (no models/)", flush=True)
    return None
  return Reference(args.torch_python, args.ref)


def our_programs(module: str, batch: int, mode: str, remat: str = "none", backward: str = "xla"):
  """(jitted fn, args) of our network's forward (eval) or value-and-gradient of the mean squared output,
  the network built as training builds it with ``training.remat = remat`` and ``training.backward =
  backward``."""
  config = load_config(module)
  model = models.get_model(schema.as_config(config).model, remat=remat, backward=backward)
  apply_fn = models.make_apply_fn(model)
  shape = (batch, int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
  params = models.init_params(model, jax.random.key(0), shape)
  x, t = inputs(config, batch, jnp.float32)
  forward, backward = programs(apply_fn)
  return (forward, (params, x, t)) if mode == "fwd" else (backward, (params, x, t, jax.random.key(1)))


def timed(fn, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def bench(name: str, ours: str, theirs: str, mode: str, args, reference, peak_gflop_per_s) -> list[dict]:
  compiled, compile_s, flops, fn_args = {}, {}, {}, {}
  for variant in args.variants:
    vjp, options = VARIANTS[variant]
    fn, fn_args[variant] = our_programs(ours, args.batch, mode, backward=vjp)
    t0 = time.perf_counter()
    compiled[variant] = fn.lower(*fn_args[variant]).compile(compiler_options=options)
    compile_s[variant] = time.perf_counter() - t0
    timed(compiled[variant], *fn_args[variant])                          # warm-up
    cost = compiled[variant].cost_analysis()
    flops[variant] = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
  ref_params = None
  if reference is not None:
    ref_params = reference.ask(op="setup", config=theirs, batch=args.batch, threads=args.threads)["params"]
  times = {v: [] for v in compiled}
  ref_times = []
  for _ in range(args.rounds):
    for variant, fn_c in compiled.items():
      times[variant].append(timed(fn_c, *fn_args[variant]))
    if reference is not None:
      ref_times += reference.ask(op="time", mode=mode, repeats=1)["seconds"]
  n_params = sum(p.size for p in jax.tree.leaves(fn_args[args.variants[0]][0]))
  load = os.getloadavg()[0]
  rows = []
  for variant in compiled:
    gflop_per_s = flops[variant] / 1e9 / statistics.median(times[variant])
    row = dict(config=name, mode=mode, variant=variant, params=n_params, ref_params=ref_params,
               compile_s=compile_s[variant], ours_s=statistics.median(times[variant]),
               gflop=flops[variant] / 1e9, gflop_per_s=gflop_per_s, load_1min=load)
    if peak_gflop_per_s:
      row["of_peak"] = gflop_per_s / peak_gflop_per_s
    if ref_times:
      row.update(ref_s=statistics.median(ref_times),
                 ratio=statistics.median(o / r for o, r in zip(times[variant], ref_times)),
                 ratio_min=min(times[variant]) / min(ref_times))
      if peak_gflop_per_s:        # the reference's rate on our flop count (the same network)
        row["ref_of_peak"] = flops[variant] / 1e9 / row["ref_s"] / peak_gflop_per_s
    rows.append(row)
    print(row, flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the reference "
                      "(ours uses every core XLA sees: run on a 2-core machine or pin with taskset)")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS)[:2], choices=list(CONFIGS))
  parser.add_argument("--modes", nargs="*", default=["fwd", "fwd_bwd"], choices=["fwd", "fwd_bwd"])
  parser.add_argument("--torch_python", default=None)
  parser.add_argument("--ref", default=None, help="an exported copy of yang-song/score_sde_pytorch")
  parser.add_argument("--variants", nargs="*", default=["default", "tuned", "tuned_taps"], choices=list(VARIANTS))
  parser.add_argument("--peak_rounds", type=int, default=5, help="rounds of benchmarks/networks/peak.py's "
                      "measurement, run first (0: skip; the of_peak columns are then left out)")
  parser.add_argument("--name", default="networks_vs_reference")
  args = parser.parse_args()

  best = peak.peak(peak.measure(args.peak_rounds)) if args.peak_rounds else None
  load_start = os.getloadavg()
  reference = start_reference(args)
  rows = []
  try:
    for name in args.configs:
      for mode in args.modes:
        rows += bench(name, *CONFIGS[name], mode, args, reference, best)
  finally:
    if reference is not None:
      reference.close()
  load_end = os.getloadavg()
  notes = (f"`python -m benchmarks.networks.networks_vs_reference --rounds {args.rounds} --variants "
           f"{' '.join(args.variants)}` on {machine()}, batch "
           f"{args.batch}, {args.threads} threads for torch (2.13.0+cpu, score_sde_pytorch at its mirror's HEAD, "
           "CUDA ops patched out: its native upfirdn2d runs the FIR). Each round times one call of each variant "
           "of ours, then one call of the reference; times are medians over rounds; ratio = median of the "
           "per-round ratios ours / reference (the robust figure on a shared machine: both sides ran in the "
           "same rounds), ratio_min = best / best. fwd: eval mode, no "
           "gradient; fwd_bwd: value and gradient of the mean squared output w.r.t. every parameter, dropout on. "
           "compile_s: lower + compile of the jitted function (no persistent cache). gflop: XLA's cost model of "
           "our program; of_peak / ref_of_peak: our rate / the reference's rate on that flop count, as a "
           "fraction of the best dense rate benchmarks/networks/peak.py measured just before "
           f"({best or float('nan'):.0f} GFLOP/s). Load (1-minute load average; the machine has "
           f"{os.cpu_count()} cores and is shared): {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the "
           "end, load_1min per row at the end of its rounds. Variants: "
           + "; ".join(f"{k} = conv gradient {VARIANTS[k][0]!r}, options {VARIANTS[k][1]}" for k in args.variants)
           + ".")
  print(write(args.name, f"Score networks against score_sde_pytorch on CPU, batch {args.batch}", rows,
              ["config", "mode", "variant", "params", "ref_params", "compile_s", "ours_s", "ref_s", "ratio",
               "ratio_min", "gflop", "gflop_per_s", "of_peak", "ref_of_peak", "load_1min"], notes))


if __name__ == "__main__":
  main()
