"""Porting score_sde / score_sde_pytorch parameters to this project's networks.

Both references build NCSN++ / DDPM++ / DDPM from the same blocks in the same order as
``models/ncsnpp.py`` (score_sde_pytorch ``models/ncsnpp.py`` walks ``self.all_modules`` in forward
order; score_sde's flax modules are auto-named ``Class_k`` in call order), and inside a block the
sub-layers carry the same names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ...). What differs:
  * torch layouts: Conv ``weight`` OIHW -> flax ``kernel`` HWIO; Linear ``weight`` [out, in] ->
    ``kernel`` = weight.T; GroupNorm ``weight`` -> ``scale``;
  * score_sde's NIN layers (``NIN_k``: ``W`` [in, out], ``b``) are ``nn.Dense`` here: they become the
    block's next ``Dense_j`` (after the time-embedding Dense, if any), with W unchanged;
  * the FIR resampling convolutions (``Conv2d_0`` inside Up/Downsample; score_sde names its kernel
    ``weight``, HWIO) store their kernel and bias on the Up/Downsample module itself here;
  * class names: score_sde's ``ResnetBlockBigGANpp``, ``ResnetBlockDDPMpp``, ``AttnBlockpp``;
  * the torch model's top level is an unnamed list: its i-th entry with parameters is our i-th
    top-level submodule with parameters, in call order (recorded with ``nn.intercept_methods``).
Buffers (``sigmas``) are not parameters here: the noise levels come from the SDE.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_CLASS_RENAMES = {"ResnetBlockBigGANpp": "ResnetBlockBigGAN", "ResnetBlockDDPMpp": "ResnetBlockDDPM",
                  "AttnBlockpp": "AttnBlock"}


def template(model: nn.Module, shape) -> tuple[dict, list[str]]:
  """(parameter shapes as a nested dict, top-level submodule names in call order) for inputs [B, ...]."""
  order: list[str] = []

  def record(next_fun, args, kwargs, context):
    path = context.module.path
    if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
      order.append(path[0])
    return next_fun(*args, **kwargs)

  shape = (1,) + tuple(shape[1:])
  with nn.intercept_methods(record):
    params = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                               jnp.zeros(shape), jnp.ones(shape[:1])))["params"]
  return params, [name for name in order if name in params]


def _leaf(name: str, value: np.ndarray, torch_layout: bool) -> tuple[str, np.ndarray]:
  """A reference leaf -> (our leaf name, value in our layout)."""
  if name == "W":                                     # NIN [in, out] (2-D) or the Fourier frequencies (1-D)
    return ("kernel", value) if value.ndim == 2 else ("W", value)
  if name == "b":
    return "bias", value
  if torch_layout and name == "weight":
    if value.ndim == 4:
      return "kernel", np.transpose(value, (2, 3, 1, 0))     # OIHW -> HWIO
    if value.ndim == 2:
      return "kernel", value.T                                # Linear [out, in] -> [in, out]
    return "scale", value                                     # GroupNorm
  if name == "weight" and value.ndim == 4:
    return "kernel", value                                    # score_sde's FIR Conv2d: ``weight``, already HWIO
  return name, value


def _convert_module(tree: dict, torch_layout: bool, where: str, sources: dict) -> dict:
  """A reference (sub)module's nested dict -> ours; ``sources`` maps our paths to reference names."""
  out: dict = {}
  n_dense = sum(1 for k in tree if isinstance(tree[k], dict) and k.startswith("Dense_"))
  nins = sorted((k for k in tree if re.fullmatch(r"NIN_\d+", k)), key=lambda k: int(k.split("_")[1]))
  renamed = {k: f"Dense_{n_dense + j}" for j, k in enumerate(nins)}
  for key, value in tree.items():
    src = f"{where}.{key}" if where else key
    if isinstance(value, dict):
      if re.fullmatch(r"Conv2d_\d+", key):               # FIR conv: parameters live on the resampler itself
        for k, v in _convert_module(value, torch_layout, src, {}).items():
          out[k] = v
          sources[k] = f"{src}.{k}"
        continue
      m = re.fullmatch(r"([A-Za-z0-9]+?)_(\d+)", key)
      new = renamed.get(key) or (f"{_CLASS_RENAMES.get(m.group(1), m.group(1))}_{m.group(2)}" if m else key)
      sub_sources: dict = {}
      out[new] = _convert_module(value, torch_layout, src, sub_sources)
      sources.update({f"{new}/{k}": v for k, v in sub_sources.items()})
    else:
      name, array = _leaf(key, np.asarray(value), torch_layout)
      out[name] = array
      sources[name] = src
  return out


def _nest(flat: dict[str, np.ndarray], sep: str) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split(sep)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else k
    out.update(_flatten(v, path) if isinstance(v, dict) else {path: v})
  return out


def _check_and_cast(converted: dict, sources: dict, expected: dict, what: str) -> dict:
  """Every expected leaf present with its shape, nothing extra; float32 arrays in our nesting."""
  got, want = _flatten(converted), _flatten(expected)
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  bad = sorted(k for k in set(want) & set(got) if tuple(got[k].shape) != tuple(want[k].shape))
  if missing or extra or bad:
    parts = []
    if missing:
      parts.append(f"missing {len(missing)}: {missing[:8]}")
    if extra:
      parts.append(f"extra {len(extra)}: {[sources.get(k, k) for k in extra[:8]]}")
    if bad:
      parts.append("mis-shaped: " + ", ".join(f"{sources.get(k, k)} {tuple(got[k].shape)} (needs {tuple(want[k].shape)} "
                                             f"for {k})" for k in bad[:8]))
    raise ValueError(f"{what} does not fit the configured network: " + "; ".join(parts))
  return _nest({k: np.asarray(v, np.float32) for k, v in got.items()}, "/")


def from_torch_state_dict(model: nn.Module, shape, state_dict: dict[str, np.ndarray]) -> dict:
  """score_sde_pytorch state dict (names with or without DataParallel's ``module.``; buffers allowed)
  -> our params.

  Raises:
    ValueError: missing, extra or mis-shaped tensors (named), or a different number of layers.
  """
  expected, order = template(model, shape)
  modules: dict[int, dict] = {}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    m = re.fullmatch(r"all_modules\.(\d+)\.(.+)", key)
    if m is None:
      if key.rsplit(".", 1)[-1] == "sigmas":
        continue                                          # buffer: the noise levels come from the SDE
      raise ValueError(f"unexpected tensor {key!r}: score_sde_pytorch models keep every layer in all_modules")
    modules.setdefault(int(m.group(1)), {})[m.group(2)] = value
  indices = sorted(modules)
  if len(indices) != len(order):
    raise ValueError(f"the checkpoint has {len(indices)} layers with parameters, the configured network "
                     f"{len(order)}: the config does not describe this checkpoint's network")
  converted, sources = {}, {}
  for i, ours in zip(indices, order):
    sub_sources: dict = {}
    converted[ours] = _convert_module(_nest(modules[i], "."), True, f"all_modules.{i}", sub_sources)
    sources.update({f"{ours}/{k}": v for k, v in sub_sources.items()})
  return _check_and_cast(converted, sources, expected, "the score_sde_pytorch checkpoint")


def from_flax_params(model: nn.Module, shape, params: dict) -> dict:
  """score_sde (flax) parameters -> ours: class and NIN renames, FIR convs folded into resamplers.

  Raises:
    ValueError: missing, extra or mis-shaped tensors (named).
  """
  expected, _ = template(model, shape)
  sources: dict = {}
  converted = _convert_module(params, False, "", sources)
  return _check_and_cast(converted, sources, expected, "the score_sde checkpoint")
