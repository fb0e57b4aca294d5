"""GroupNorm's backward on XLA:CPU: models.norm.GroupNorm's hand-written one against autodiff of flax's.

For each image shape, GroupNorm + swish forward and backward (gradient of sum(swish(GN(x))^2) with respect
to the parameters and x) is compiled twice: ``group_norm`` (the custom VJP models.norm.GroupNorm uses from
CUSTOM_BACKWARD_MIN_PIXELS up) and ``flax.linen.GroupNorm`` (autodiff). The two alternate round by round;
ratio = median over rounds of ours / flax. XLA:CPU with YNNPACK fusions off, as main.py runs.

    python -m benchmarks.networks.group_norm [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.common import write
from models import norm
from training.runtime import CPU_OPTIONS

SHAPES = [((128, 8, 8, 16), 4), ((128, 8, 8, 32), 8), ((128, 4, 4, 32), 8), ((128, 8, 8, 64), 16),
          ((8, 8, 8, 256), 32), ((8, 16, 16, 128), 32), ((32, 16, 16, 64), 16), ((8, 16, 16, 256), 32),
          ((8, 32, 32, 64), 16), ((8, 32, 32, 128), 32)]


def compiled_grads(shape, groups):
  x = jax.random.normal(jax.random.key(0), shape) * 2.0 + 1.0
  scale, bias = jnp.ones(shape[-1]), jnp.zeros(shape[-1])
  flax_gn = nn.GroupNorm(num_groups=groups, epsilon=1e-6)
  ours = lambda p, x: norm.group_norm(x, p["scale"], p["bias"], groups, 1e-6)
  theirs = lambda p, x: flax_gn.apply({"params": p}, x)
  params = {"scale": scale, "bias": bias}
  out = {}
  for name, f in (("ours", ours), ("flax", theirs)):
    loss = lambda p, x, f=f: jnp.sum(jax.nn.swish(f(p, x)) ** 2)
    out[name] = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile(compiler_options=CPU_OPTIONS)
  return out, params, x


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--calls", type=int, default=30, help="calls per timed round")
  args = parser.parse_args()
  rows = []
  for shape, groups in SHAPES:
    fns, params, x = compiled_grads(shape, groups)
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
      for k, f in fns.items():
        jax.block_until_ready(f(params, x))
        start = time.perf_counter()
        for _ in range(args.calls):
          out = f(params, x)
        jax.block_until_ready(out)
        times[k].append((time.perf_counter() - start) / args.calls)
    rows.append(dict(shape="x".join(map(str, shape)), groups=groups, pixels=shape[1] * shape[2],
                     ours_ms=1e3 * statistics.median(times["ours"]), flax_ms=1e3 * statistics.median(times["flax"]),
                     ours_over_flax=statistics.median(a / b for a, b in zip(times["ours"], times["flax"])),
                     path_used="hand-written" if shape[1] * shape[2] >= norm.CUSTOM_BACKWARD_MIN_PIXELS else "autodiff"))
    print(rows[-1], flush=True)
  print(write("group_norm", "GroupNorm + swish forward and backward on XLA:CPU: hand-written backward vs autodiff", rows,
              ["shape", "groups", "pixels", "ours_ms", "flax_ms", "ours_over_flax", "path_used"],
              f"`python -m benchmarks.networks.group_norm --rounds {args.rounds}`: median ms per call (gradient of "
              "sum(swish(GN(x))^2) w.r.t. scale, bias and x), ours = models.norm.group_norm's custom VJP, flax = "
              "autodiff of nn.GroupNorm; ratio = median over alternated rounds. path_used: what models.norm.GroupNorm "
              f"runs at that size (hand-written from {norm.CUSTOM_BACKWARD_MIN_PIXELS} pixels up)."))


if __name__ == "__main__":
  main()
