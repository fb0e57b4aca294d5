"""Where the compile time of the CIFAR-10 networks' forward + backward goes on XLA:CPU (issue 12, item 2).

For NCSN++ and DDPM++ (batch 8), the program networks.py and networks_vs_reference.py time (value and
gradient w.r.t. every parameter of the mean squared output, dropout on) is lowered and compiled in a
fresh worker process per variant, so no variant profits from another's caches. Reported per variant:
lowering (tracing to StableHLO) and compile seconds; of the compile, the time XLA's HLO passes report
(``TF_CPP_VMODULE=hlo_pass_pipeline=1``: each pass logs its own time) and the rest (the HLO verifier,
IR emission and LLVM's compilation of each kernel); the number of fused kernels in the optimised
program, which LLVM compiles one by one; the compile's remainder per kernel; and one run of the
compiled program (after a warm-up call).

Variants: ``main.py`` = runtime.CPU_OPTIONS (what main.py applies on CPU); ``remat full`` / ``remat
dots`` = training.remat, jax.checkpoint per block (the issue's suggestion); ``llvm O1`` / ``llvm O0``
= XLA's backend optimisation level 1 / 0 (scripts/test.sh compiles the test suite at 0).

    python -m benchmarks.networks.compile_time [--configs ...] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from benchmarks.common import ROOT, machine, write
from training import runtime

CONFIGS = {"NCSN++ (ve/cifar10)": "configs.ve.cifar10", "DDPM++ (vp/cifar10)": "configs.vp.cifar10"}
# variant -> (training.remat, extra XLA flags)
VARIANTS = {
    "main.py": ("none", ""),
    "remat full": ("full", ""),
    "remat dots": ("dots", ""),
    "llvm O1": ("none", "--xla_backend_optimization_level=1"),
    "llvm O0": ("none", "--xla_backend_optimization_level=0"),
}
MARK = "COMPILE_TIME_START"
PASS_LINE = re.compile(r"HLO pass: (\S+) time: ([\d.]+) (s|ms|us) ")
UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def worker(module: str, remat: str, batch: int) -> None:
  """In the worker process: lower, compile (stderr gets MARK first), count kernels, run once."""
  import jax

  from benchmarks.networks.networks_vs_reference import our_programs

  backward, args = our_programs(module, batch, "fwd_bwd", remat)
  t0 = time.perf_counter()
  lowered = backward.lower(*args)
  lower_s = time.perf_counter() - t0
  print(MARK, file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  text = compiled.as_text()
  kernels = len(re.findall(r"^\s*(?:ROOT )?\S+ = .*? fusion\(", text, re.M))
  convolutions = len(re.findall(r" convolution\(", text))
  jax.block_until_ready(compiled(*args))
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  run_s = time.perf_counter() - t0
  print(json.dumps(dict(lower_s=lower_s, compile_s=compile_s, kernels=kernels, convolutions=convolutions,
                        run_s=run_s)), flush=True)


def measure(name: str, module: str, variant: str, batch: int) -> dict:
  remat, flags = VARIANTS[variant]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="hlo_pass_pipeline=1")
  env["XLA_FLAGS"] = runtime.cpu_xla_flags(f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip())
  proc = subprocess.run([sys.executable, "-m", "benchmarks.networks.compile_time", "--worker", module, remat,
                         str(batch)], cwd=ROOT, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"worker {name} / {variant} failed:\n{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  log = proc.stderr.split(MARK, 1)[1]
  passes_s = sum(float(v) * UNIT[u] for _, v, u in PASS_LINE.findall(log))
  rest_s = result["compile_s"] - passes_s
  row = dict(config=name, variant=variant, lower_s=result["lower_s"], compile_s=result["compile_s"],
             hlo_passes_s=passes_s, rest_s=rest_s, kernels=result["kernels"],
             rest_ms_per_kernel=1e3 * rest_s / max(result["kernels"], 1), convolutions=result["convolutions"],
             run_s=result["run_s"])
  print(row, flush=True)
  return row


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--name", default="compile_time")
  args = parser.parse_args()
  rows = [measure(name, CONFIGS[name], variant, args.batch) for name in args.configs for variant in args.variants]
  notes = (f"`python -m benchmarks.networks.compile_time` on {machine()}, batch {args.batch}, one fresh worker "
           "process per row, no persistent cache. Program: value and gradient of the mean squared network output "
           "w.r.t. every parameter, dropout on (networks.programs). lower_s: tracing to StableHLO; compile_s: XLA; "
           "hlo_passes_s: the sum of the times XLA's HLO passes log; rest_s = compile_s - hlo_passes_s (HLO verifier, "
           "IR emission, LLVM); kernels: fused kernels in the optimised program (each compiled by LLVM); run_s: one "
           "call after a warm-up. Variants: main.py = runtime.CPU_OPTIONS " + json.dumps(runtime.CPU_OPTIONS) +
           "; remat = training.remat; llvm O1 / O0 = --xla_backend_optimization_level.")
  print(write(args.name, f"Compile time of forward + backward on XLA:CPU, batch {args.batch}", rows,
              ["config", "variant", "lower_s", "compile_s", "hlo_passes_s", "rest_s", "kernels",
               "rest_ms_per_kernel", "convolutions", "run_s"], notes))


if __name__ == "__main__":
  main()
