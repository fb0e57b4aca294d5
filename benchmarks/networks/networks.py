"""Forward and forward+backward time of the CIFAR-10 score networks (NCSN++, DDPM++).

For each configuration: parameter count, compile time (first call minus a run) and the median of
several runs of (a) the network's forward pass and (b) forward + backward (the gradient of the mean
squared output with respect to the parameters, dropout on, as in training), on random 32x32x3 inputs
and random times. Default: batch 8 on CPU. On an accelerator pass ``--batch 128``; ``--dtype
bfloat16`` casts parameters and inputs to bfloat16 (GroupNorm statistics stay float32 in flax) and
reports whether the output and the gradient stay finite.

    python -m benchmarks.networks.networks                                  # CPU, batch 8, float32
    python -m benchmarks.networks.networks --batch 128 --dtype bfloat16     # on a GPU
"""

from __future__ import annotations

import argparse
import importlib
import math

import jax
import jax.numpy as jnp

import models
from benchmarks.common import machine, time_compiled, write

CONFIGS = {
    "ve/cifar10 (NCSN++ cont.)": "configs.ve.cifar10",
    "vp/cifar10 (DDPM++ cont.)": "configs.vp.cifar10",
    "ve/cifar10_deep (NCSN++ deep)": "configs.ve.cifar10_deep",
    "vp/cifar10_deep (DDPM++ deep)": "configs.vp.cifar10_deep",
}


def load_config(module: str):
  return importlib.import_module(module).get_config()


def inputs(config, batch: int, dtype):
  """Random images [batch, H, W, C] in [-1, 1] and noise labels [batch] of the config's kind."""
  size, channels = int(config.data.image_size), int(config.data.num_channels)
  kx, kt = jax.random.split(jax.random.key(0))
  x = jax.random.uniform(kx, (batch, size, size, channels), minval=-1.0, maxval=1.0).astype(dtype)
  t = jax.random.uniform(kt, (batch,), minval=1e-3, maxval=1.0)
  return x, t


def programs(apply_fn):
  """Jitted (forward(p, x, t) in eval mode, backward(p, x, t, key) = value and gradient w.r.t. p of the
  mean squared output in train mode, dropout on): what this benchmark and networks_vs_reference.py time."""
  forward = jax.jit(lambda p, x, t: apply_fn(p, x, t, train=False))

  def mean_square(p, x, t, key):
    out = apply_fn(p, x, t, train=True, rngs={"dropout": key})
    return jnp.mean(jnp.square(out.astype(jnp.float32)))

  return forward, jax.jit(jax.value_and_grad(mean_square))


def bench(name: str, module: str, batch: int, dtype_name: str, repeats: int) -> dict:
  config = load_config(module)
  model = models.get_model(config)
  apply_fn = models.make_apply_fn(model)
  dtype = jnp.dtype(dtype_name)
  shape = (batch, int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
  params = jax.tree.map(lambda p: p.astype(dtype), models.init_params(model, jax.random.key(0), shape))
  n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  x, t = inputs(config, batch, dtype)

  forward, backward = programs(apply_fn)
  fwd_compile, fwd_run, out = time_compiled(forward, params, x, t, repeats=repeats)
  bwd_compile, bwd_run, (value, grads) = time_compiled(backward, params, x, t, jax.random.key(1), repeats=repeats)
  finite = bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))) and bool(jnp.isfinite(value)) and all(
      bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in jax.tree.leaves(grads))
  return dict(config=name, params=n_params, batch=batch, dtype=dtype_name, fwd_compile_s=fwd_compile,
              fwd_s=fwd_run, fwd_img_per_s=batch / fwd_run, fwd_bwd_compile_s=bwd_compile, fwd_bwd_s=bwd_run,
              fwd_bwd_img_per_s=batch / bwd_run, finite=finite)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
  parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--name", default=None, help="results file name (default networks_<platform>_b<batch>_<dtype>)")
  args = parser.parse_args()

  platform = jax.devices()[0].platform
  rows = []
  for name in args.configs:
    rows.append(bench(name, CONFIGS[name], args.batch, args.dtype, args.repeats))
    print(rows[-1], flush=True)
  out = args.name or f"networks_{platform}_b{args.batch}_{args.dtype}"
  notes = (f"`python -m benchmarks.networks.networks --batch {args.batch} --dtype {args.dtype}` on {machine()}. "
           f"Times are medians of {args.repeats} runs after compilation; compile = first call minus a run. "
           "fwd+bwd = value and gradient of the mean squared output w.r.t. the parameters, dropout on.")
  print(write(out, f"Score networks: forward and forward+backward, batch {args.batch}, {args.dtype}", rows,
              ["config", "params", "batch", "dtype", "fwd_compile_s", "fwd_s", "fwd_img_per_s", "fwd_bwd_compile_s",
               "fwd_bwd_s", "fwd_bwd_img_per_s", "finite"], notes))


if __name__ == "__main__":
  main()
