"""Writes the score_sde (flax) equivalence fixtures of tests/test_published.py: score_sde's own linen
networks and ``get_score_fn`` run on current JAX with seeded weights, and flax msgpack checkpoints in
its ``State`` layout. Runs with this project's environment (jax 0.10.2, flax 0.12.8, ml_collections; no
tensorflow) on an exported copy of the reference, never on the project itself:

    mkdir -p /tmp/ref_jax
    git -C <mirror of yang-song/score_sde> archive HEAD models configs sde_lib.py utils.py | tar -x -C /tmp/ref_jax
    .venv/bin/python tests/reference/make_score_sde_fixtures.py --ref /tmp/ref_jax      # ~50 s on 2 CPU cores

(models/, configs/ and sde_lib.py are what runs; utils.py is only read, for ``batch_mul``. Exporting the
whole tree needs Score_SDE_demo.ipynb's blob, which a partial mirror may lack.)

Patches (applied by the script to the exported copy, or in sys.modules; nothing else changes; the script
checks them):
  * models/utils.py annotates ``State.optimizer`` with ``flax.optim.Optimizer``; flax.optim no longer
    exists, so the annotation becomes ``Any`` (an annotation only; ``from typing import Any`` added).
  * models/utils.py imports ``wideresnet_noise_conditional`` (a classifier, unused here) and
    ``flax.training.checkpoints`` (only for that classifier); both imports are dropped.
  * models/utils.py's ``init_model`` splits the variables with FrozenDict's ``variables.pop('params')``;
    current flax returns a plain dict from ``init``, so it becomes ``flax.core.pop(variables, 'params')``
    (the same split for both kinds).
  * The reference's top-level utils.py imports tensorflow (and PIL); the script registers a ``utils``
    module holding only its ``batch_mul`` (utils.py line 41, ``jax.vmap(lambda a, b: a * b)(a, b)``),
    compiled from the reference's own source: all that sde_lib.py and models/utils.py take from it.

For each reduced configuration (tests/reference/make_score_sde_pytorch_fixtures.py's REDUCED and SMALL,
16x16 images; but progressive="residual" *with* FIR, the reference config's default, because its FIR
up-sampling convolution cannot run on the PyTorch port): the model is built by the reference's
``models.utils.init_model`` (as run_lib.py does), the params tree of ``model.init`` is flattened to
"/"-joined names and filled with testkit/seeded.py weights (layout "flax", seed 0; seed 1 for
the EMA tree), and the score is the reference's ``models.utils.get_score_fn`` with its own SDE
(sde_lib.VESDE / VPSDE / subVPSDE built as run_lib.py builds them) at batch 2, on inputs
x = mean(x0, t) + std(t) z, x0 uniform on the data range, t uniform on (1e-3, 1). Fixture
jax_<name>.npz holds: config (JSON of the model / data / training sections), names and shapes (the
params manifest), seed, x (NHWC), t, score (NHWC) and score_ema (the seed-1 tree).

Beside it, jax_<name>_checkpoint_1 is what flax.training.checkpoints.save_checkpoint wrote for
score_sde (``flax.serialization.to_bytes``, i.e. msgpack of ``to_state_dict``) of the reference's own
``models.utils.State`` dataclass, unreplicated as run_lib.py saves it: step 1, optimizer as
flax.optim's ``Optimizer.state_dict`` ({target: raw params, state: {step, param_states}}, with
param_states Adam's ``init_state``: {grad_ema, grad_sq_ema} zeros per parameter; flax/optim/base.py
and adam.py), lr, model_state (no collections but params: empty), ema_rate, params_ema (the seed-1
tree), rng (a raw uint32[2] key). r_ddpm has no checkpoint (its weights would weigh 1 MB); the other
three cover the format.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_score_sde_pytorch_fixtures import (  # noqa: E402  (shared with the torch side; numpy only at import)
    REDUCED, SMALL, reference_sde, section)
sys.path.insert(0, ROOT)
from testkit.seeded import seeded_tensor, skipped  # noqa: E402  (numpy only)

sys.path.remove(ROOT)
while HERE in sys.path:     # the reference's configs/ and models/ (namespace packages) must not meet ours
  sys.path.remove(HERE)

SEED, EMA_SEED, BATCH, T_MIN = 0, 1, 2, 1e-3
NAMES = ["r_ncsnpp_outputskip_inputskip_cat", "r_ncsnpp_residual", "r_ddpmpp_ddpmblock", "r_ddpm"]
# On top of REDUCED: FIR back on for the residual paths (upsample_conv_2d runs here, not on torch).
OVERRIDES = {"r_ncsnpp_residual": dict(fir=True)}
NO_CHECKPOINT = ("r_ddpm",)

PATCHES = [  # (file, old, new): the module docstring's list
    ("models/utils.py", "  optimizer: flax.optim.Optimizer\n", "  optimizer: Any\n"),
    ("models/utils.py", "from models import wideresnet_noise_conditional\n", ""),
    ("models/utils.py", "from flax.training import checkpoints\n", ""),
    ("models/utils.py", "init_model_state, initial_params = variables.pop('params')",
     "init_model_state, initial_params = flax.core.pop(variables, 'params')"),
]
TYPING = "from typing import Any  # patched: State.optimizer's annotation\n"


def patch_reference(ref: str) -> None:
  """Applies the module docstring's patches to the exported reference (idempotent)."""
  for name, old, new in PATCHES:
    path = os.path.join(ref, name)
    text = open(path).read()
    if old in text:
      open(path, "w").write(text.replace(old, new, 1))
    text = open(path).read()
    assert old not in text and (not new or new in text), (path, old)
  path = os.path.join(ref, "models/utils.py")
  text = open(path).read()
  if TYPING not in text:
    open(path, "w").write(TYPING + text)


def install_utils_stub(ref: str) -> None:
  """A ``utils`` module with the reference utils.py's own ``batch_mul`` (that file imports tensorflow)."""
  import jax

  source = open(os.path.join(ref, "utils.py")).read()
  (fn,) = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == "batch_mul"]
  utils = types.ModuleType("utils")
  utils.jax = jax
  exec(compile(ast.Module(body=[fn], type_ignores=[]), os.path.join(ref, "utils.py"), "exec"), utils.__dict__)
  sys.modules["utils"] = utils


def reference_config(name: str):
  """The reference config module with the PyTorch script's reduction (16x16, SMALL, REDUCED's overrides)."""
  module, overrides = REDUCED[name]
  config = importlib.import_module(module).get_config()
  config.data.image_size = 16
  config.model.update(SMALL)
  config.model.update(overrides)
  config.model.update(OVERRIDES.get(name, {}))
  return config


def inputs(config, sde):
  """x [B, H, W, C] and t [B]: perturbed data from the reference SDE's marginal (the torch side's recipe,
  drawn in NHWC order)."""
  import jax.numpy as jnp

  rng = np.random.default_rng(1234)
  size = config.data.image_size
  shape = (BATCH, size, size, config.data.num_channels)
  x0 = rng.uniform(-1.0 if config.data.centered else 0.0, 1.0, shape).astype(np.float32)
  t = rng.uniform(T_MIN, 1.0, BATCH).astype(np.float32)
  z = rng.standard_normal(shape).astype(np.float32)
  mean, std = sde.marginal_prob(jnp.asarray(x0), jnp.asarray(t))
  return mean + std[:, None, None, None] * jnp.asarray(z), jnp.asarray(t)


def score(config, sde, model, params, states, x, t):
  from models import utils as mutils

  fn = mutils.get_score_fn(sde, model, params, states, train=False, continuous=config.training.continuous)
  return np.asarray(fn(x, t), dtype=np.float32)


def flatten(tree, prefix=""):
  """{"A/B/kernel": leaf} for a nested params dict."""
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    out.update(flatten(v, path) if hasattr(v, "items") else {path: v})
  return out


def nest(flat):
  # models.port._nest does this for the project, which is off sys.path here (the reference's models/ is on it).
  out = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def checkpoint_bytes(config, states, raw, ema) -> bytes:
  """The reference's State as flax.training.checkpoints.save_checkpoint serialises it (run_lib.py saves
  ``flax_utils.unreplicate(pstate)``, so every field is a device array)."""
  import flax
  import jax
  import jax.numpy as jnp
  from models import utils as mutils

  # flax.optim.Adam(...).create(params).state_dict(): OptimizerState(step=int32 0, param_states=tree_map(
  # init_param_state, params)), init_param_state = _AdamParamState(zeros_like(p), zeros_like(p)).
  moments = lambda p: {"grad_ema": jnp.zeros_like(p), "grad_sq_ema": jnp.zeros_like(p)}
  adam = {"step": jnp.asarray(0, jnp.int32), "param_states": jax.tree.map(moments, raw)}
  state = mutils.State(step=1, optimizer={"target": raw, "state": adam}, lr=config.optim.lr, model_state=states,
                       ema_rate=config.model.ema_rate, params_ema=ema,
                       rng=jax.random.PRNGKey(config.seed))
  state = jax.tree.map(jnp.asarray, state)         # flax_utils.replicate / unreplicate: Python scalars -> arrays
  return flax.serialization.to_bytes(state)


def make(name: str) -> None:
  import flax
  import jax
  import jax.numpy as jnp
  from models import utils as mutils

  config = reference_config(name)
  model, states, init_params = mutils.init_model(jax.random.PRNGKey(0), config)
  states = flax.core.unfreeze(states)
  manifest = [(k, list(v.shape)) for k, v in flatten(flax.core.unfreeze(init_params)).items() if not skipped(k)]
  assert len(manifest) == len(jax.tree.leaves(init_params)), name        # every parameter is seeded
  raw = nest({k: jnp.asarray(seeded_tensor(k, s, SEED, layout="flax")) for k, s in manifest})
  ema = nest({k: jnp.asarray(seeded_tensor(k, s, EMA_SEED, layout="flax")) for k, s in manifest})
  assert jax.tree.structure(raw) == jax.tree.structure(flax.core.unfreeze(init_params)), name
  sde = reference_sde(config)
  x, t = inputs(config, sde)
  out = dict(config=json.dumps({k: section(config, k) for k in ("model", "data", "training")}),
             names=np.array([k for k, _ in manifest]), shapes=json.dumps([s for _, s in manifest]),
             seed=np.int64(SEED), x=np.asarray(x), t=np.asarray(t),
             score=score(config, sde, model, raw, states, x, t), score_ema=score(config, sde, model, ema, states, x, t))
  np.savez_compressed(os.path.join(OUT, f"jax_{name}.npz"), **out)
  if name not in NO_CHECKPOINT:
    with open(os.path.join(OUT, f"jax_{name}_checkpoint_1"), "wb") as f:
      f.write(checkpoint_bytes(config, states, raw, ema))
  print(name, "params", sum(int(np.prod(s)) for _, s in manifest), "max|score|", float(np.abs(out["score"]).max()),
        "max|score_ema|", float(np.abs(out["score_ema"]).max()), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="an exported copy of yang-song/score_sde")
  parser.add_argument("--only", nargs="*", help="fixture names (default: all)")
  args = parser.parse_args()
  ref = os.path.abspath(args.ref)
  patch_reference(ref)
  sys.path[:] = [ref] + [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
  install_utils_stub(ref)
  from models import ddpm, ncsnpp  # noqa: F401  (register the reference's networks)

  os.makedirs(OUT, exist_ok=True)
  start = time.time()
  for name in NAMES:
    if not args.only or name in args.only:
      make(name)
  print(f"{time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
  main()
