"""Observations for conditional sampling: y = A x + noise_std * eps, a linear operator with its transpose.

``Observation`` holds the operator A (a function of a batch x [B, ...] to y [B, ...]), its transpose A^T,
the observation noise level and, where cheap, a pseudo-inverse. Two kinds are built in: coordinate masks
(inpainting, ``mask_observation``) and the grey level of RGB pixels (colorization, ``colour_observation``);
``observation_from_matrix`` takes any matrix acting on the flattened sample.

``projector``: A A^T is an orthogonal projection (A's rows orthonormal, or zero), i.e. A is a partial
isometry. Then A^T A is the orthogonal projection onto the observed subspace, x = (I - A^T A) x + A^T (A x)
splits a sample into its unobserved and observed parts, isotropic noise stays isotropic in both, and the
replacement, RePaint and particle algorithms (``samplers.inpaint``) act on the observed part exactly as they
would on observed coordinates. Masks and the colour operator are projectors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib import checks


@dataclasses.dataclass(frozen=True)
class Observation:
  """y = A x + noise_std * eps for samples x [B, ...].

  forward: A, x [B, ...] -> y [B, ...]. transpose: A^T, y -> x. noise_std: the observation noise (>= 0).
  projector: A A^T is an orthogonal projection (see the module docstring). pinv: A's pseudo-inverse, or None.
  name: for messages. replace: ``replace_observed`` computed exactly (masks: a select, so observed values
  are copied bit for bit), or None for the general formula.
  """

  forward: Callable[[jax.Array], jax.Array]
  transpose: Callable[[jax.Array], jax.Array]
  noise_std: float = 0.0
  projector: bool = False
  pinv: Callable[[jax.Array], jax.Array] | None = None
  name: str = "custom"
  replace: Callable[[jax.Array, jax.Array], jax.Array] | None = None   # an exact replace_observed, if any

  def __post_init__(self):
    checks.check_finite_nonnegative("noise_std", self.noise_std)

  def observed_part(self, x: jax.Array) -> jax.Array:
    """A^T A x: the observed part of x (a projector's)."""
    return self.transpose(self.forward(x)).reshape(x.shape)

  def replace_observed(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """x with its observed part set to the one of y: x + A^T (y - A x) (a projector's A x then equals y)."""
    if self.replace is not None:
      return self.replace(x, y)
    return x + self.transpose(y - self.forward(x)).reshape(x.shape)


def mask_observation(mask: jax.Array) -> Observation:
  """Coordinates observed where ``mask`` (broadcastable to the samples, 0/1) is 1: A = A^T = diag(mask)."""
  m = jnp.asarray(mask, jnp.float32)
  select = lambda v: m * v
  return Observation(select, select, 0.0, True, select, "mask", lambda x, y: jnp.where(m > 0, y, x))


def colour_observation() -> Observation:
  """The grey level of RGB pixels, y = (r + g + b) / sqrt(3) per pixel ([B, H, W, 3] -> [B, H, W, 1]): the first
  axis of ``colorization_basis``, a unit vector, so A A^T = I."""
  forward = lambda x: jnp.sum(x, axis=-1, keepdims=True) / math.sqrt(3)
  transpose = lambda y: jnp.repeat(y / math.sqrt(3), 3, axis=-1)
  return Observation(forward, transpose, 0.0, True, transpose, "colour")


def observation_from_matrix(A, noise_std: float = 0.0) -> Observation:
  """y = A x.reshape(B, -1)[i] + noise_std eps for a matrix A [m, d] (d = the sample size per example).

  ``projector`` is set when A A^T is numerically an orthogonal projection; ``pinv`` from numpy's SVD.
  """
  A = np.asarray(A, np.float64)
  if A.ndim != 2:
    raise ValueError(f"A must be a matrix [m, d], got shape {A.shape}")
  gram = A @ A.T
  projector = bool(np.allclose(gram @ gram, gram, atol=1e-6) and np.allclose(gram, gram.T, atol=1e-6))
  A32, pinv32 = jnp.asarray(A, jnp.float32), jnp.asarray(np.linalg.pinv(A), jnp.float32)
  forward = lambda x: x.reshape(x.shape[0], -1) @ A32.T
  transpose = lambda y: y @ A32                          # [B, d]: the samplers reshape to the sample shape
  pinv = lambda y: y @ pinv32.T
  return Observation(forward, transpose, float(noise_std), projector, pinv, "matrix")


# --------------------------------------------------------------------------- image masks
IMAGE_MASKS = ("bottom_half", "top_half", "left_half", "right_half", "center")


def image_mask(name: str, shape) -> np.ndarray:
  """1 where a pixel is observed: float32 [H, W, C] for one of ``IMAGE_MASKS`` ("bottom_half": the bottom half
  is unknown, the top half observed; "center": the central half-size square is unknown)."""
  h, w, c = shape
  mask = np.ones((h, w, c), np.float32)
  if name == "bottom_half":
    mask[h // 2:] = 0
  elif name == "top_half":
    mask[:h - h // 2] = 0
  elif name == "right_half":
    mask[:, w // 2:] = 0
  elif name == "left_half":
    mask[:, :w - w // 2] = 0
  elif name == "center":
    mask[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
  else:
    raise ValueError(f"mask must be one of {list(IMAGE_MASKS)}, got {name!r}")
  return mask


def colorization_basis() -> np.ndarray:
  """An orthogonal 3x3 matrix M whose first column is the grey axis (1, 1, 1)/sqrt(3).

  Columns: grey, (1, -1, 0)/sqrt(2) and (1, 1, -2)/sqrt(6), mutually orthogonal unit vectors (a Helmert
  basis). u = x M maps RGB to (grey level x sqrt 3, two chroma axes). Orthogonality is what makes the grey
  level a projector observation (``colour_observation``): the forward SDE's isotropic noise s(t)^2 I stays
  isotropic on the grey axis and on its complement. A non-orthogonal basis (e.g. YUV) would correlate the
  noise across channels.
  """
  return np.stack([np.ones(3) / np.sqrt(3), np.array([1.0, -1.0, 0.0]) / np.sqrt(2),
                   np.array([1.0, 1.0, -2.0]) / np.sqrt(6)], axis=1)
