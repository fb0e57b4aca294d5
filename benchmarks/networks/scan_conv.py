"""Why our networks do not scan over their repeated residual blocks on CPU (issue 12, item 2).

Scanning a run of identical blocks (``lax.scan`` over their stacked parameters) compiles the block once
instead of once per block. Tried on DDPM++ (CIFAR-10, batch 8; a scratch version of models/ncsnpp.py that
scanned every run of identical units, down and up): the forward + backward compiled 20-30% faster, but
its backward ran 93-99 s against 6 s unscanned. This script isolates the cause on a stack of 3x3
convolutions + swish ([batch, size, size, channels], ``depth`` layers): unrolled in Python against one
``lax.scan``, forward and gradient w.r.t. the stacked kernels. XLA:CPU runs convolutions inside a loop
body far slower than at the top level (known: jax-ml/jax#12868), and the gradient's convolutions are
the ones it hits.

    python -m benchmarks.networks.scan_conv [--size 32] [--channels 128] [--depth 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.common import machine, write
from training import runtime


def conv(h, k):
  return jax.lax.conv_general_dilated(h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def unrolled(kernels, x):
  for i in range(kernels.shape[0]):
    x = jax.nn.swish(conv(x, kernels[i]))
  return jnp.mean(x ** 2)


def scanned(kernels, x):
  x, _ = jax.lax.scan(lambda h, k: (jax.nn.swish(conv(h, k)), None), x, kernels)
  return jnp.mean(x ** 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=128)
  parser.add_argument("--depth", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, args.channels))
  kernels = 0.03 * jax.random.normal(jax.random.key(1), (args.depth, 3, 3, args.channels, args.channels))
  rows = []
  for options_name, options in (("XLA defaults", {}), ("main.py (runtime.CPU_OPTIONS)", dict(runtime.CPU_OPTIONS))):
    for mode in ("forward", "gradient"):
      times = {}
      for name, fn in (("unrolled", unrolled), ("lax.scan", scanned)):
        program = jax.jit(fn if mode == "forward" else jax.grad(fn))
        compiled = program.lower(kernels, x).compile(compiler_options=options)
        jax.block_until_ready(compiled(kernels, x))
        runs = []
        for _ in range(args.repeats):
          t0 = time.perf_counter()
          jax.block_until_ready(compiled(kernels, x))
          runs.append(time.perf_counter() - t0)
        times[name] = statistics.median(runs)
      rows.append(dict(options=options_name, mode=mode, unrolled_s=times["unrolled"], scan_s=times["lax.scan"],
                       scan_over_unrolled=times["lax.scan"] / times["unrolled"]))
      print(rows[-1], flush=True)
  notes = (f"`python -m benchmarks.networks.scan_conv` on {machine()}: {args.depth} layers of 3x3 convolution "
           f"({args.channels} channels) + swish on [{args.batch}, {args.size}, {args.size}, {args.channels}], the "
           "mean square of the output; forward, and its gradient w.r.t. the stacked kernels; median of "
           f"{args.repeats} runs after a warm-up. Same function, unrolled or one lax.scan.")
  print(write("scan_conv", "Convolutions inside lax.scan on XLA:CPU", rows,
              ["options", "mode", "unrolled_s", "scan_s", "scan_over_unrolled"], notes))


if __name__ == "__main__":
  main()
