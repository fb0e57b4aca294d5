"""Writes the score_sde (flax) equivalence fixtures of tests/test_published.py: score_sde's own linen
networks and ``get_score_fn`` run on current JAX with seeded weights, and flax msgpack checkpoints in
its ``State`` layout. Run it with this project's environment (jax, flax, ml_collections):

    git -C <mirror of yang-song/score_sde> archive HEAD models configs sde_lib.py | tar -x -C /tmp/ref_jax
    python tests/reference/make_score_sde_fixtures.py --ref /tmp/ref_jax

Patches (applied by the script to the exported copy, or in sys.modules; nothing else changes):
  * models/utils.py annotates ``State.optimizer`` with ``flax.optim.Optimizer``; flax.optim no longer
    exists, so the annotation becomes ``Any`` (an annotation only).
  * models/utils.py imports ``wideresnet_noise_conditional`` (a classifier, unused here) and
    ``flax.training.checkpoints``; both imports are dropped.
  * models/utils.py's ``init_model`` splits the variables with FrozenDict's ``variables.pop('params')``;
    current flax returns a plain dict from ``init``, so it becomes ``flax.core.pop(variables, 'params')``
    (the same split for both kinds).
  * The reference's top-level utils.py imports tensorflow; the script registers a ``utils`` module
    holding only its ``batch_mul`` (``jax.vmap(lambda a, b: a * b)``, utils.py line 41), which is all
    that sde_lib.py and models/utils.py take from it.

For each reduced configuration (tests/reference/make_score_sde_pytorch_fixtures.py's, 16x16 images; and
progressive="residual" *with* FIR, whose up-sampling convolution the PyTorch port cannot run), the
params tree of ``model.init`` is flattened to "/"-joined names and filled with
tests/reference/seeded.py weights (layout "flax", seed 0; seed 1 for the EMA tree). The score is the
reference's ``models.utils.get_score_fn`` with its own SDE at batch 2 on x = mean(x0, t) + std(t) z.
Fixture jax_<name>.npz holds config (JSON), names, shapes, seed, x, t, score, score_ema; beside it
jax_<name>_checkpoint_1 is ``flax.serialization.msgpack_serialize`` of the ``State`` fields as
``flax.training.checkpoints.save_checkpoint`` writes them (``to_state_dict`` of State: step,
optimizer {target: raw params, state: {step, param_states}}, lr, model_state, ema_rate,
params_ema, rng). To keep the fixtures small, ``param_states`` (Adam's moments, two more copies of the
weights, which no reader of a published model needs) is left empty, and r_ddpm has no checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_score_sde_pytorch_fixtures import REDUCED, SMALL  # noqa: E402  (configs shared with the torch side)
from seeded import seeded_tensor  # noqa: E402

while HERE in sys.path:
  sys.path.remove(HERE)

SEED, EMA_SEED, BATCH, T_MIN = 0, 1, 2, 1e-3
NAMES = ["r_ncsnpp_outputskip_inputskip_cat", "r_ncsnpp_residual", "r_ddpmpp_ddpmblock", "r_ddpm"]
NO_CHECKPOINT = ("r_ddpm",)      # 1 MB of weights; the other three cover the format
OVERRIDES = {"r_ncsnpp_residual": dict(progressive="residual", progressive_input="residual", fir=True)}
PATCHES = [
    ("models/utils.py", "  optimizer: flax.optim.Optimizer\n", "  optimizer: Any\n"),
    ("models/utils.py", "from models import wideresnet_noise_conditional\n", ""),
    ("models/utils.py", "from flax.training import checkpoints\n", ""),
    ("models/utils.py", "init_model_state, initial_params = variables.pop('params')",
     "init_model_state, initial_params = flax.core.pop(variables, 'params')"),
]


def patch_reference(ref: str) -> None:
  for name, old, new in PATCHES:
    path = os.path.join(ref, name)
    text = open(path).read()
    if old in text:
      open(path, "w").write(text.replace(old, new))
    assert old not in open(path).read(), (path, old)
  if "Any" not in open(os.path.join(ref, "models/utils.py")).read().split("class State")[0]:
    text = open(os.path.join(ref, "models/utils.py")).read()
    open(os.path.join(ref, "models/utils.py"), "w").write("from typing import Any\n" + text)


def install_utils_stub() -> None:
  import jax

  utils = types.ModuleType("utils")
  utils.batch_mul = lambda a, b: jax.vmap(lambda a, b: a * b)(a, b)      # the reference's utils.batch_mul
  sys.modules["utils"] = utils


def reference_config(name: str):
  module, overrides = REDUCED[name]
  config = importlib.import_module(module).get_config()
  config.data.image_size = 16
  config.model.update(SMALL)
  config.model.update(overrides)
  config.model.update(OVERRIDES.get(name, {}))
  return config


def reference_sde(config):
  import sde_lib

  m, name = config.model, config.training.sde.lower()
  if name == "vesde":
    return sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
  if name == "vpsde":
    return sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
  return sde_lib.subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


def flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    out.update(flatten(v, path) if hasattr(v, "items") else {path: v})
  return out


def nest(flat):
  out = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def section(config, name):
  return json.loads(json.dumps(config[name].to_dict(), default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def make(name: str) -> None:
  import flax
  import jax
  import jax.numpy as jnp
  from models import utils as mutils

  config = reference_config(name)
  model, states, init_params = mutils.init_model(jax.random.key(0), config)
  states = flax.core.unfreeze(states)
  manifest = [(k, list(v.shape)) for k, v in flatten(flax.core.unfreeze(init_params)).items()]
  raw = nest({k: jnp.asarray(seeded_tensor(k, s, SEED, "flax")) for k, s in manifest})
  ema = nest({k: jnp.asarray(seeded_tensor(k, s, EMA_SEED, "flax")) for k, s in manifest})
  sde = reference_sde(config)
  rng = np.random.default_rng(1234)
  shape = (BATCH, 16, 16, config.data.num_channels)
  x0 = rng.uniform(-1.0 if config.data.centered else 0.0, 1.0, shape).astype(np.float32)
  t = rng.uniform(T_MIN, 1.0, BATCH).astype(np.float32)
  z = rng.standard_normal(shape).astype(np.float32)
  mean, std = sde.marginal_prob(jnp.asarray(x0), jnp.asarray(t))
  x = mean + std[:, None, None, None] * jnp.asarray(z)
  score = lambda p: np.asarray(mutils.get_score_fn(sde, model, p, states, train=False,
                                                   continuous=config.training.continuous)(x, jnp.asarray(t)))
  out = dict(config=json.dumps({k: section(config, k) for k in ("model", "data", "training")}),
             names=np.array([k for k, _ in manifest]), shapes=json.dumps([s for _, s in manifest]),
             seed=np.int64(SEED), x=np.asarray(x), t=t, score=score(raw), score_ema=score(ema))
  np.savez_compressed(os.path.join(OUT, f"jax_{name}.npz"), **out)
  print(name, "params", sum(int(np.prod(s)) for _, s in manifest), "max|score|", float(np.abs(out["score"]).max()),
        flush=True)
  # State as flax.training.checkpoints writes it (serialization.to_state_dict of the dataclass).
  if name in NO_CHECKPOINT:
    return
  state = {"step": 1,
           "optimizer": {"target": raw, "state": {"step": 0, "param_states": {}}},
           "lr": config.optim.lr, "model_state": states, "ema_rate": config.model.ema_rate, "params_ema": ema,
           "rng": np.asarray(jax.random.key_data(jax.random.key(0)))}
  state = jax.tree.map(np.asarray, state)
  with open(os.path.join(OUT, f"jax_{name}_checkpoint_1"), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(state))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="an exported copy of yang-song/score_sde")
  parser.add_argument("--only", nargs="*", help="fixture names (default: all)")
  args = parser.parse_args()
  patch_reference(args.ref)
  sys.path[:] = [os.path.abspath(args.ref)] + [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
  install_utils_stub()
  from models import ddpm, ncsnpp  # noqa: F401  (register the reference's networks)

  for name in NAMES:
    if not args.only or name in args.only:
      make(name)


if __name__ == "__main__":
  main()
