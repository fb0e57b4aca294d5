"""Memory of jax.grad through the samplers and the likelihood, by adjoint and by checkpoint option.

A small network score: the 2-D MLP (models/mlp.py, hidden 256, depth 3, ~0.27M parameters) as a VP
score through ``models.get_score_fn``, a batch of 256. Each row is the gradient of a scalar loss
(mean |x|^2 of the samples, or mean logp of a data batch) with respect to the network's parameters
(and, for the likelihood, the data), jitted, lowered and compiled; ``compiled.memory_analysis()``
gives XLA's buffer assignment: temporaries (residuals kept for the backward pass plus workspace),
arguments and outputs. These are XLA:CPU numbers; a GPU's fusions differ, so read them as estimates
of the scaling, not of a GPU's peak. The run time is the median of 3 runs of the compiled gradient
on this machine (shared with other jobs while measured: compare rows, not absolute seconds);
the compile time is lower + compile of the gradient (XLA's in-process caches make repeats cheaper).

Rows:
  ode: the probability-flow ODE sampler (adaptive Tsit5, rtol = atol = 1e-5) with each adjoint of
    ``samplers.ode.ADJOINTS``; max_steps bounds the differentiated loop (4096 is the default; direct's
    cost grows with it, so it is measured at 256 only).
  likelihood: ``get_likelihood_fn`` (Hutchinson, one Rademacher probe) with each adjoint.
  pc / ald / edm_heun / dpm_solver_pp: the fixed-step loops with and without ``checkpoint=True``.

    python -m benchmarks.samplers.backward_memory
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import models
import samplers
import sde_lib
from benchmarks.common import time_compiled, write
from models.mlp import MLP

BATCH, DIM = 256, 2
MIB = 2.0**20


def network_score(sde):
  """(params, score(params) -> score_fn): the MLP as a score_sde-parameterised VP score."""
  net = MLP(hidden=256, depth=3)
  params = net.init(jax.random.key(0), jnp.zeros((BATCH, DIM)), jnp.ones(BATCH))
  apply = lambda p, x, labels, train, rngs: net.apply(p, x, labels)
  return params, lambda p: models.get_score_fn(sde, apply, p)


def measure(fn, *args) -> dict:
  """XLA's memory analysis of jit(fn) at args (MiB), its lower + compile seconds and median run seconds."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  _, run_s, _ = time_compiled(compiled, *args)
  return {"temp_MiB": mem.temp_size_in_bytes / MIB, "argument_MiB": mem.argument_size_in_bytes / MIB,
          "output_MiB": mem.output_size_in_bytes / MIB, "compile_s": compile_s, "backward_run_s": run_s}


def main():
  sde = sde_lib.VPSDE(0.1, 20.0, 1000)
  params, score = network_score(sde)
  key = jax.random.key(1)
  data = jax.random.normal(jax.random.key(2), (BATCH, DIM))
  rows = []

  def sampler_row(case, method, option, **options):
    sample_fn = samplers.get_sampler(sde, (BATCH, DIM), method, **options)
    loss = lambda p: jnp.mean(jnp.sum(sample_fn(key, score(p))[0] ** 2, axis=1))
    rows.append({"case": case, "option": option, **measure(jax.grad(loss), params)})
    print(rows[-1], flush=True)

  for adjoint, max_steps in [("recursive_checkpoint", 4096), ("recursive_checkpoint", 256), ("backsolve", 4096),
                             ("backsolve", 256), ("direct", 256)]:
    sampler_row(f"ode sampler, tsit5 adaptive, max_steps {max_steps}", "ode", f"adjoint={adjoint}",
                adjoint=adjoint, max_steps=max_steps)
  for adjoint, max_steps in [("recursive_checkpoint", 4096), ("backsolve", 4096), ("direct", 256)]:
    likelihood_fn = samplers.get_likelihood_fn(sde, adjoint=adjoint, max_steps=max_steps)
    loss = lambda p, x: jnp.mean(likelihood_fn(key, score(p), x)[0])
    rows.append({"case": f"likelihood (d/dparams, d/dx), tsit5 adaptive, max_steps {max_steps}",
                 "option": f"adjoint={adjoint}", **measure(jax.grad(loss, argnums=(0, 1)), params, data)})
    print(rows[-1], flush=True)
  for case, method, options in [("pc, reverse_diffusion + langevin, 100 steps (200 NFE)", "pc", dict(num_steps=100)),
                                ("ald, 10 levels x 10 steps (101 NFE)", "ald", dict(num_steps=10, corrector_steps=10)),
                                ("edm_heun, 35 NFE", "edm_heun", dict(nfe=35)),
                                ("dpm_solver_pp, 20 NFE", "dpm_solver_pp", dict(nfe=20))]:
    for checkpoint in (False, True):
      sampler_row(case, method, f"checkpoint={checkpoint}", checkpoint=checkpoint, **options)

  n_params = sum(v.size for v in jax.tree.leaves(params))
  notes = (f"jax.grad of a scalar loss through each sampler / the likelihood with respect to the parameters of a "
           f"2-D MLP score (hidden 256, depth 3, {n_params} parameters, {n_params * 4 / MIB:.2f} MiB in float32), "
           f"VP SDE, batch {BATCH}. temp = XLA temporaries of the compiled gradient (residuals for the backward "
           "pass + workspace); argument / output = parameters (+ data) in and gradients out. XLA:CPU buffer "
           "assignment; compile: lower + compile of the gradient; run: median of 3 runs on a machine shared with "
           "another job.\n\n"
           "Reading: `checkpoint=True` cuts the fixed-step loops' temporaries 11-110x (to one state per step plus "
           "one step's activations) and did not slow XLA:CPU here (less memory traffic outweighs the recomputed "
           "forward; on an accelerator expect up to one extra forward pass). For the ODE, recursive_checkpoint "
           "(the default) is both the smallest and the fastest; its memory hardly depends on max_steps. "
           "backsolve carries parameter-sized cotangents through every stage of its backward Tsit5 solve "
           "(about 7 x 1.07 MiB), so with a score this small it needs more, not less, and its backward adaptive "
           "solve is 5-7x slower; direct differentiates the whole bounded loop (734 MiB at max_steps 256, growing "
           "with max_steps, so not measured at the default 4096).")
  print(write("backward_memory", "Backward-pass memory of sampling and likelihood gradients", rows,
              ["case", "option", "temp_MiB", "argument_MiB", "output_MiB", "compile_s", "backward_run_s"], notes))


if __name__ == "__main__":
  main()
