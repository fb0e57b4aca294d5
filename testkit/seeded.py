"""Seeded weights for reference-equivalence fixtures: numpy only, so tests rebuild them without torch.

The fixture scripts in tests/reference/ fill a reference network (score_sde_pytorch, score_sde's flax code,
pytorch-fid's Inception) with these values, run it, and commit only the seed, the tensor names and
shapes, the inputs and the outputs. A test rebuilds the same tensors from the manifest, converts them
to this project's layout and compares outputs.

Each tensor is drawn from its own generator, seeded by (seed, crc32(name)), so the values do not depend
on the order of the state dict. Scales keep activations O(1) through deep residual networks and leave
no layer at zero (score_sde initialises the last layer of each block near zero, which would hide
errors in everything before it):
  * weights with >= 2 dims: N(0, 1/fan_in);
  * 1-D normalisation scales (``weight`` / ``scale``): 1 + 0.1 N(0, 1);
  * biases (``bias`` / ``b``): 0.1 N(0, 1);
  * the Fourier projection's fixed ``W`` (1-D): 16 N(0, 1) (score_sde's fourier_scale);
  * BatchNorm running statistics: mean 0.1 N(0, 1), variance 1 + 0.1 |N(0, 1)| (``running_*``);
  * integer buffers (``num_batches_tracked``) and ``sigmas``: not drawn (the caller keeps its own).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

LAYOUTS = ("torch", "flax")


def fan_in(name: str, shape: tuple[int, ...], layout: str) -> int:
  """Inputs per output unit. torch: Conv OIHW / Linear [out, in]; flax: HWIO / Dense [in, out];
  score_sde's NIN ``W`` is [in, out] in both."""
  leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
  if leaf == "W" or layout == "flax":
    return math.prod(shape[:-1])
  return math.prod(shape[1:])


def seeded_tensor(name: str, shape, seed: int, layout: str = "torch") -> np.ndarray:
  """The float32 tensor of ``shape`` for the entry ``name`` (see the module docstring)."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
  shape = tuple(int(d) for d in shape)
  rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
  z = rng.standard_normal(shape)
  leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
  if leaf == "running_mean":
    out = 0.1 * z
  elif leaf == "running_var":
    out = 1.0 + 0.1 * np.abs(z)
  elif len(shape) >= 2:
    out = z / math.sqrt(fan_in(name, shape, layout))
  elif leaf == "W":
    out = 16.0 * z
  elif leaf in ("weight", "scale"):
    out = 1.0 + 0.1 * z
  elif leaf in ("bias", "b"):
    out = 0.1 * z
  else:
    raise ValueError(f"no seeding rule for tensor {name!r} of shape {shape}")
  return out.astype(np.float32)


def skipped(name: str) -> bool:
  """Entries the rule leaves to the caller: the noise-level buffer and integer counters."""
  leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
  return leaf in ("sigmas", "num_batches_tracked")


def seeded_state(manifest, seed: int, layout: str = "torch") -> dict[str, np.ndarray]:
  """{name: tensor} for every (name, shape) of ``manifest`` that is not ``skipped``."""
  return {name: seeded_tensor(name, shape, seed, layout) for name, shape in manifest if not skipped(name)}
