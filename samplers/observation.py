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


MAX_DENSE_SIZE = 4096      # the largest sample size (prod of a sample's dims) an operator is materialised for


@dataclasses.dataclass(frozen=True)
class Spectral:
  """A singular value decomposition A = U S V^T in functions, for samples x [B, ...] of d = prod(x.shape[1:]).

  s: the singular values, [d] or per sample [B, d], 0 in the directions A does not observe (A's null space).
  vt: x [B, ...] -> V^T x [B, d]; v: c [B, d] -> V c [B, ...] (V orthogonal, so isotropic noise stays isotropic);
  ut: y -> U^T y [B, d], its entries where s > 0 (the rest are ignored). In these coordinates the observation is
  d independent scalar ones: (U^T y)_i = s_i (V^T x)_i + noise_std eps_i (Kawar et al. 2022, sec. 3).
  """

  s: jax.Array
  vt: Callable[[jax.Array], jax.Array]
  v: Callable[[jax.Array], jax.Array]
  ut: Callable[[jax.Array], jax.Array]

  def observed(self) -> jax.Array:
    """1.0 where s > 0, else 0.0: [d] or [B, d]."""
    return (self.s > 0).astype(jnp.float32)

  def inverse(self, numerator, unobserved=0.0) -> jax.Array:
    """numerator / s where s > 0, else ``unobserved``: S^+ applied coordinate-wise, [d] or [B, d]."""
    return jnp.where(self.s > 0, numerator / jnp.where(self.s > 0, self.s, 1.0), unobserved)

  def pseudo_data(self, y: jax.Array) -> jax.Array:
    """S^+ U^T y [B, d]: the observed coordinates V^T x as the data says (0 where unobserved)."""
    return self.inverse(self.ut(y))

  def noise_levels(self, noise_std: float, unobserved=0.0) -> jax.Array:
    """noise_std / s where s > 0, else ``unobserved``: the noise of the pseudo-data S^+ U^T y in V^T x's
    coordinates (MCGdiff's tau_i, DDRM's sigma_y / s_i), [d] or [B, d]."""
    return self.inverse(jnp.float32(noise_std), unobserved)


def dense_spectral(A, sample_shape) -> Spectral:
  """``Spectral`` of a matrix A [m, d] acting on each sample flattened in C order (numpy's SVD, float64)."""
  A = np.asarray(A, np.float64)
  m, d = A.shape
  u, sv, vt = np.linalg.svd(A, full_matrices=True)
  s = np.zeros(d)
  s[:len(sv)] = np.where(sv > 1e-6 * max(sv.max(initial=0.0), 1e-30), sv, 0.0)   # numerical null space: unobserved
  u32, vt32, s32 = (jnp.asarray(a, jnp.float32) for a in (u, vt, s))
  sample_shape = tuple(sample_shape)

  def ut(y):
    c = y.reshape(y.shape[0], -1) @ u32                                  # [B, m]
    return c[:, :d] if m >= d else jnp.pad(c, ((0, 0), (0, d - m)))

  return Spectral(s32, lambda x: x.reshape(x.shape[0], -1) @ vt32.T,
                  lambda c: (c @ vt32).reshape((c.shape[0],) + sample_shape), ut)


@dataclasses.dataclass(frozen=True)
class Observation:
  """y = A x + noise_std * eps for samples x [B, ...].

  forward: A, x [B, ...] -> y [B, ...]. transpose: A^T, y -> x. noise_std: the observation noise (>= 0).
  projector: A A^T is an orthogonal projection (see the module docstring). pinv: A's pseudo-inverse, or None.
  name: for messages. replace: ``replace_observed`` computed exactly (masks: a select, so observed values
  are copied bit for bit), or None for the general formula. spectral: a function of the batch shape [B, ...]
  returning A's ``Spectral`` (SVD) cheaply, or None: ``svd`` then materialises A.
  """

  forward: Callable[[jax.Array], jax.Array]
  transpose: Callable[[jax.Array], jax.Array]
  noise_std: float = 0.0
  projector: bool = False
  pinv: Callable[[jax.Array], jax.Array] | None = None
  name: str = "custom"
  replace: Callable[[jax.Array, jax.Array], jax.Array] | None = None   # an exact replace_observed, if any
  spectral: Callable[[tuple], Spectral] | None = None

  def __post_init__(self):
    checks.check_finite_nonnegative("noise_std", self.noise_std)

  def with_noise(self, noise_std: float) -> Observation:
    """The same operator observed with noise of std ``noise_std``."""
    return dataclasses.replace(self, noise_std=float(noise_std))

  def observed_part(self, x: jax.Array) -> jax.Array:
    """A^T A x: the observed part of x (a projector's)."""
    return self.transpose(self.forward(x)).reshape(x.shape)

  def replace_observed(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """x with its observed part set to the one of y: x + A^T (y - A x) (a projector's A x then equals y)."""
    if self.replace is not None:
      return self.replace(x, y)
    return x + self.transpose(y - self.forward(x)).reshape(x.shape)

  def svd(self, shape) -> Spectral:
    """A's ``Spectral`` for samples of the batch shape [B, ...]: the operator's own, or numpy's SVD of A
    materialised by applying it to the d basis vectors (d = prod(shape[1:]) <= ``MAX_DENSE_SIZE``; call
    outside jit, once per solver).

    Raises:
      ValueError: d > MAX_DENSE_SIZE and the operator has no cheap SVD of its own.
    """
    shape = tuple(shape)
    if self.spectral is not None:
      return self.spectral(shape)
    d = math.prod(shape[1:])
    if d > MAX_DENSE_SIZE:
      raise ValueError(f"observation {self.name!r} has no SVD of its own and samples of size {d} > "
                       f"{MAX_DENSE_SIZE} are too large to materialise; use dps (needs only A) or give spectral=")
    basis = np.eye(d, dtype=np.float32).reshape((d,) + shape[1:])
    rows = np.asarray(jax.device_get(self.forward(jnp.asarray(basis))), np.float64).reshape(d, -1)   # [d, m]: A^T
    return dense_spectral(rows.T, shape[1:])

  def as_projector(self, shape) -> tuple[Observation, Callable[[jax.Array], jax.Array], Spectral]:
    """The equivalent projector observation in the SVD's coordinates: (P, y -> P's data, spectral).

    P x = 1[s > 0] V^T x [B, d] is a partial isometry, and P's data S^+ U^T y equals P x + noise of std
    noise_std / s_i per coordinate (Kawar et al. 2022 sec. 3): noise-free, observing y is observing P x.
    """
    sp = self.svd(shape)
    mask = sp.observed()
    forward = lambda x: mask * sp.vt(x)
    transpose = lambda c: sp.v(mask * c)
    proj = Observation(forward, transpose, 0.0, True, transpose, f"{self.name} (spectral)")
    return proj, sp.pseudo_data, sp


def linear_observation(forward: Callable[[jax.Array], jax.Array], sample_shape, noise_std: float = 0.0,
                       transpose: Callable[[jax.Array], jax.Array] | None = None, name: str = "custom") -> Observation:
  """Your own linear operator: ``forward`` maps x [B, *sample_shape] to y [B, ...]; its transpose is
  ``transpose`` or, when None, derived by ``jax.linear_transpose`` (exact for any linear JAX function).

  Raises:
    ValueError: ``forward`` is not linear in x (checked on random inputs: A(a u + b w) = a A u + b A w).
  """
  sample_shape = tuple(int(n) for n in sample_shape)
  probe = jax.random.normal(jax.random.key(0), (2, 2) + sample_shape)
  u, w = probe[0], probe[1]
  lhs, rhs = forward(0.7 * u - 1.3 * w), 0.7 * forward(u) - 1.3 * forward(w)
  if lhs.shape != rhs.shape or not bool(jnp.allclose(lhs, rhs, rtol=1e-4, atol=1e-4 * (1 + float(jnp.abs(rhs).max())))):
    raise ValueError(f"observation {name!r}: forward is not linear in x (A(a u + b w) != a A u + b A w)")
  if transpose is None:
    def transpose(y):
      primal = jax.ShapeDtypeStruct((y.shape[0],) + sample_shape, jnp.float32)
      return jax.linear_transpose(forward, primal)(y)[0]
  return Observation(forward, transpose, float(noise_std), False, None, name)


def mask_observation(mask: jax.Array) -> Observation:
  """Coordinates observed where ``mask`` (broadcastable to the samples, 0/1) is 1: A = A^T = diag(mask)."""
  m = jnp.asarray(mask, jnp.float32)
  select = lambda v: m * v

  def spectral(shape):                                   # V = I, s = the mask, U = I
    s = jnp.broadcast_to(m, shape).reshape(shape[0], -1)
    flat = lambda v: v.reshape(v.shape[0], -1)
    return Spectral(s, flat, lambda c: c.reshape((c.shape[0],) + tuple(shape[1:])), flat)

  return Observation(select, select, 0.0, True, select, "mask", lambda x, y: jnp.where(m > 0, y, x), spectral)


def colour_observation() -> Observation:
  """The grey level of RGB pixels, y = (r + g + b) / sqrt(3) per pixel ([B, H, W, 3] -> [B, H, W, 1]): the first
  axis of ``colorization_basis``, a unit vector, so A A^T = I."""
  forward = lambda x: jnp.sum(x, axis=-1, keepdims=True) / math.sqrt(3)
  transpose = lambda y: jnp.repeat(y / math.sqrt(3), 3, axis=-1)
  basis = jnp.asarray(colorization_basis(), jnp.float32)

  def spectral(shape):                                   # per pixel: V = the basis, s = (1, 0, 0), U = 1
    n = math.prod(shape[1:-1])
    s = jnp.tile(jnp.asarray([1.0, 0.0, 0.0]), n)
    ut = lambda y: jnp.concatenate([y, jnp.zeros(y.shape[:-1] + (2,), y.dtype)], -1).reshape(y.shape[0], -1)
    return Spectral(s, lambda x: (x @ basis).reshape(x.shape[0], -1),
                    lambda c: c.reshape((c.shape[0],) + tuple(shape[1:])) @ basis.T, ut)

  return Observation(forward, transpose, 0.0, True, transpose, "colour", None, spectral)


def observation_from_matrix(A, noise_std: float = 0.0) -> Observation:
  """y = A x.reshape(B, -1)[i] + noise_std eps for a matrix A [m, d] (d = the sample size per example): y [B, m].

  ``projector`` is set when A A^T is numerically an orthogonal projection; ``pinv`` and the SVD from numpy's.
  """
  A = np.asarray(A, np.float64)
  if A.ndim != 2 or min(A.shape) < 1 or not np.all(np.isfinite(A)):
    raise ValueError(f"A must be a finite matrix [m, d], got shape {A.shape}")
  gram = A @ A.T
  projector = bool(np.allclose(gram @ gram, gram, atol=1e-6) and np.allclose(gram, gram.T, atol=1e-6))
  A32, pinv32 = jnp.asarray(A, jnp.float32), jnp.asarray(np.linalg.pinv(A), jnp.float32)
  forward = lambda x: x.reshape(x.shape[0], -1) @ A32.T
  transpose = lambda y: y @ A32                          # [B, d]: the samplers reshape to the sample shape
  pinv = lambda y: y @ pinv32.T

  def spectral(shape):
    if math.prod(shape[1:]) != A.shape[1]:
      raise ValueError(f"A has {A.shape[1]} columns but a sample has {math.prod(shape[1:])} entries (shape {shape})")
    return dense_spectral(A, shape[1:])

  return Observation(forward, transpose, float(noise_std), projector, pinv, "matrix", None, spectral)


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


# --------------------------------------------------------------------------- image operators
@dataclasses.dataclass(frozen=True)
class MaskParams(checks.Options):
  """mask: which box is unknown (``IMAGE_MASKS``); y is the image, 0 where unobserved."""
  mask: str = checks.spec("bottom_half", checks.choice(*IMAGE_MASKS, lower=False))


@dataclasses.dataclass(frozen=True)
class RandomPixelsParams(checks.Options):
  """fraction: the share of observed pixels (all channels of a pixel), drawn once from ``seed``."""
  fraction: float = checks.spec(0.5, checks.number(0.0, 1.0))
  seed: int = checks.spec(0, checks.integer(0))


@dataclasses.dataclass(frozen=True)
class ColourParams(checks.Options):
  """The grey level y [B, H, W, 1] of RGB images (C = 3); no parameters."""


@dataclasses.dataclass(frozen=True)
class SuperresParams(checks.Options):
  """factor: average pooling over factor x factor blocks, y [B, H / factor, W / factor, C]."""
  factor: int = checks.spec(2, checks.integer(1))


@dataclasses.dataclass(frozen=True)
class GaussianBlurParams(checks.Options):
  """kernel_size (odd) and blur_std (pixels) of a Gaussian kernel; y: the image convolved, zero padding."""
  kernel_size: int = checks.spec(5, checks.integer(1))
  blur_std: float = checks.spec(1.0, checks.number(0.0, open_lo=True))


@dataclasses.dataclass(frozen=True)
class UniformBlurParams(checks.Options):
  """kernel_size (odd) of a box kernel; y: the image convolved, zero padding."""
  kernel_size: int = checks.spec(3, checks.integer(1))


@dataclasses.dataclass(frozen=True)
class CompressedSensingParams(checks.Options):
  """y [B, m]: m = round(ratio d) rows of Gaussian entries / sqrt(d), drawn once from ``seed``."""
  ratio: float = checks.spec(0.25, checks.number(0.0, 1.0, open_lo=True))
  seed: int = checks.spec(0, checks.integer(0))


OPERATOR_OPTIONS = {"mask": MaskParams, "random_pixels": RandomPixelsParams, "colour": ColourParams,
                    "superres": SuperresParams, "blur_gaussian": GaussianBlurParams, "blur_uniform": UniformBlurParams,
                    "compressed_sensing": CompressedSensingParams}
OPERATOR_PARAMS = {name: {f.name: f.default for f in dataclasses.fields(cls)} for name, cls in OPERATOR_OPTIONS.items()}
OPERATORS = tuple(OPERATOR_PARAMS)


def _avg_pool(x, f):
  b, h, w, c = x.shape
  return x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


def superres_observation(sample_shape, factor: int = 2) -> Observation:
  """Average pooling over factor x factor blocks of [H, W, C] images (super-resolution): A A^T = I / factor^2,
  so A^+ = factor^2 A^T (upsampling by replication) and every singular value is 1 / factor."""
  h, w, _ = sample_shape
  if h % factor or w % factor:
    raise ValueError(f"factor must divide the image size {h}x{w}, got {factor}")
  up = lambda y: jnp.repeat(jnp.repeat(y, factor, axis=1), factor, axis=2)
  return Observation(lambda x: _avg_pool(x, factor), lambda y: up(y) / factor**2, 0.0, False, up,
                     f"superres x{factor}")


def blur_kernel(kind: str, kernel_size: int, blur_std: float = 1.0) -> np.ndarray:
  """A normalised [k, k] blur kernel: "gaussian" (std ``blur_std`` pixels) or "uniform"."""
  if kind == "uniform":
    return np.full((kernel_size, kernel_size), 1.0 / kernel_size**2)
  r = np.arange(kernel_size) - (kernel_size - 1) / 2
  g = np.exp(-0.5 * (r / blur_std) ** 2)
  k = np.outer(g, g)
  return k / k.sum()


def blur_observation(sample_shape, kernel: np.ndarray, name: str = "blur") -> Observation:
  """Each channel of [H, W, C] images convolved with ``kernel`` [k, k] (odd k), zero padding ("same" size)."""
  c = sample_shape[-1]
  k = jnp.asarray(np.asarray(kernel, np.float32)[:, :, None, None] * np.ones((1, 1, 1, c), np.float32))
  forward = lambda x: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                   feature_group_count=c)
  return linear_observation(forward, sample_shape, name=name)


def make_observation(operator: str, sample_shape, noise_std: float = 0.0, **params) -> Observation:
  """One of ``OPERATORS`` for samples [B, *sample_shape] (images [H, W, C]), observed with noise of std
  ``noise_std``; ``params`` override ``OPERATOR_PARAMS[operator]``.

  Raises:
    ValueError: an unknown operator or parameter (the valid ones are listed), or a bad value.
  """
  checks.check_choice("operator", operator, OPERATORS)
  unknown = sorted(set(params) - set(OPERATOR_PARAMS[operator]))
  if unknown:
    raise ValueError(f"unknown parameter(s) {unknown} for operator {operator!r}; valid: {sorted(OPERATOR_PARAMS[operator])}")
  p = OPERATOR_OPTIONS[operator].build(None, **params)
  shape = tuple(int(n) for n in sample_shape)
  if len(shape) != 3 and operator != "compressed_sensing":
    raise ValueError(f"operator {operator!r} acts on images [H, W, C], got sample shape {shape}")
  if operator == "mask":
    obs = mask_observation(image_mask(p.mask, shape))
  elif operator == "random_pixels":
    seen = np.random.default_rng(p.seed).random(shape[:-1]) < p.fraction
    obs = dataclasses.replace(mask_observation(np.broadcast_to(seen[..., None], shape).astype(np.float32)),
                              name="random_pixels")
  elif operator == "colour":
    if shape[-1] != 3:
      raise ValueError(f"operator 'colour' needs 3 channels, got sample shape {shape}")
    obs = colour_observation()
  elif operator == "superres":
    obs = superres_observation(shape, p.factor)
  elif operator in ("blur_gaussian", "blur_uniform"):
    if p.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd, got {p.kernel_size}")
    obs = blur_observation(shape, blur_kernel(operator[5:], p.kernel_size, getattr(p, "blur_std", 1.0)), operator)
  else:
    d = math.prod(shape)
    rng = np.random.default_rng(p.seed)
    obs = dataclasses.replace(observation_from_matrix(rng.normal(size=(max(1, round(p.ratio * d)), d)) / math.sqrt(d)),
                              name="compressed_sensing")
  return obs.with_noise(checks.check_finite_nonnegative("noise_std", noise_std))


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
