"""The machine's reachable dense throughput: matrix product and 3x3 convolution GFLOP/s, XLA and numpy.

The yardstick for the score networks' rates (networks_vs_reference.py reports each network's fraction of
the best rate measured here). Sizes are the CIFAR-10 networks' (batch 8): the 3x3 convolutions
8x32x32x128 -> 128 and 8x16x16x256 -> 256, and the matrix products their im2col forms would run
([B H W, 9 C_in] @ [9 C_in, C_out]), plus a square 2048^3 product. Each rate counts 2 flops per
multiply-add of the textbook operation (a 3x3 convolution: 2 B H W 9 C_in C_out), so a faster
algorithm (Winograd) would show as a rate above the matrix product's.

    python -m benchmarks.networks.peak [--rounds 7]

Rows: xla matmul (``jnp.dot`` jitted), numpy matmul (``np.matmul``, numpy's BLAS), xla conv forward
(``lax.conv_general_dilated``, NHWC/HWIO, "SAME"), xla conv gradient (the VJP of that convolution w.r.t.
input and kernel, 2x the forward's flops, as jax differentiates it), numpy conv (im2col: the 9 shifted
copies of the padded input concatenated, then one ``np.matmul``). Median of rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.common import machine, write

MATMULS = [(8 * 32 * 32, 9 * 128, 128), (8 * 16 * 16, 9 * 256, 256), (2048, 2048, 2048)]   # (M, K, N)
CONVS = [(8, 32, 128, 128), (8, 16, 256, 256)]                                               # (B, H = W, C_in, C_out)
_DN = ("NHWC", "HWIO", "NHWC")


def _median_seconds(fn, rounds: int) -> float:
  fn()                                                     # warm-up (and compile)
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _im2col_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """3x3 "SAME" convolution [B, H, W, C] * [3, 3, C, O] as one matrix product of the unrolled input
  (the unrolled convolution of Chellapilla et al. 2006)."""
  b, h, wd, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = np.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
  return np.matmul(cols.reshape(b * h * wd, 9 * c), w.reshape(9 * c, -1)).reshape(b, h, wd, -1)


def measure(rounds: int = 7) -> list[dict]:
  """Rows {op, engine, shape, gflop, seconds, gflop_per_s}, float32."""
  rng = np.random.default_rng(0)
  rows = []

  def add(op, engine, shape, flops, fn):
    s = _median_seconds(fn, rounds)
    rows.append(dict(op=op, engine=engine, shape=shape, gflop=flops / 1e9, seconds=s, gflop_per_s=flops / 1e9 / s))
    print(rows[-1], flush=True)

  for m, k, n in MATMULS:
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    shape, flops = f"[{m}, {k}] @ [{k}, {n}]", 2.0 * m * k * n
    add("matmul", "xla", shape, flops, lambda: dot(ja, jb).block_until_ready())
    add("matmul", "numpy", shape, flops, lambda: np.matmul(a, b))
  for bsz, hw, ci, co in CONVS:
    x = rng.standard_normal((bsz, hw, hw, ci), np.float32)
    w = (rng.standard_normal((3, 3, ci, co)) / np.sqrt(9 * ci)).astype(np.float32)
    jx, jw = jnp.asarray(x), jnp.asarray(w)
    g = jnp.ones((bsz, hw, hw, co), jnp.float32)
    conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN))
    grad = jax.jit(lambda x, w, g: jax.vjp(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=_DN), x, w)[1](g))
    shape, flops = f"3x3 [{bsz}, {hw}, {hw}, {ci}] -> {co}", 2.0 * bsz * hw * hw * 9 * ci * co
    add("conv3x3 forward", "xla", shape, flops, lambda: conv(jx, jw).block_until_ready())
    add("conv3x3 gradient (input + kernel)", "xla", shape, 2 * flops, lambda: jax.block_until_ready(grad(jx, jw, g)))
    add("conv3x3 forward", "numpy (im2col)", shape, flops, lambda: _im2col_conv(x, w))
  return rows


def peak(rows: list[dict]) -> float:
  """The best rate measured (GFLOP/s): the yardstick for the networks' fractions."""
  return max(r["gflop_per_s"] for r in rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args()
  rows = measure(args.rounds)
  notes = (f"`python -m benchmarks.networks.peak --rounds {args.rounds}` on {machine()}; float32; median of "
           f"{args.rounds} runs after a warm-up; 2 flops per multiply-add of the textbook operation. Best: "
           f"{peak(rows):.0f} GFLOP/s. A machine shared with other jobs: rates are lower bounds.")
  print(write("peak", "Dense matrix product and 3x3 convolution throughput on this machine", rows,
              ["op", "engine", "shape", "gflop", "seconds", "gflop_per_s"], notes))


if __name__ == "__main__":
  main()
