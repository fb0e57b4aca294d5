"""FIR up- and down-sampling of NHWC images (StyleGAN2's upfirdn2d, as used by NCSN++).

Written from the operator's definition (Karras et al. 2020, "Analyzing and improving the image
quality of StyleGAN", App. B; score_sde's ``up_or_down_sampling.py``): upsample by zero insertion,
pad, convolve with a normalised separable FIR kernel, downsample by striding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fir_kernel_2d(k, gain: float = 1.0) -> np.ndarray:
  """The 2-D kernel outer(k, k) / sum, times ``gain``: a constant image keeps its value (times gain)."""
  k = np.asarray(k, np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  return k / k.sum() * gain


def fir_kernel_1d(k, gain: float = 1.0) -> np.ndarray:
  """The 1-D factor of ``fir_kernel_2d(k, gain)`` for a 1-D k: outer(f, f) is that 2-D kernel."""
  k = np.asarray(k, np.float32)
  return k / k.sum() * np.float32(np.sqrt(gain))


def _upfirdn1d(x: jax.Array, k: np.ndarray, up: int, down: int, pad: tuple[int, int], axis: int) -> jax.Array:
  """upfirdn along one axis as shifted slices: zero insertion, pad, convolve with k, keep every down-th.

  y[n] = sum_j k[K-1-j] u[n down + j] (a true convolution) with u the zero-inserted, padded signal. Each
  term is a strided slice of u, so XLA fuses the whole filter into one elementwise loop; a depthwise
  ``conv_general_dilated`` would take XLA:CPU's generic convolution path, which costs about a fifth of
  NCSN++'s forward (benchmarks/networks/networks_vs_reference.py).
  """
  if up > 1:   # up-1 zeros after every sample (the last one's are what the convolution form's padding adds)
    x = jnp.stack([x] + [jnp.zeros_like(x)] * (up - 1), axis=axis + 1)
    shape = list(x.shape)
    shape[axis:axis + 2] = [shape[axis] * up]
    x = x.reshape(shape)
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (pad[0], pad[1], 0)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)           # negative pads crop, as the conv form's do
  taps = len(k)
  n_out = (x.shape[axis] - taps) // down + 1
  y = None
  for j, weight in enumerate(k[::-1]):
    term = jax.lax.slice_in_dim(x, j, j + (n_out - 1) * down + 1, stride=down, axis=axis) * jnp.asarray(weight, x.dtype)
    y = term if y is None else y + term
  return y


def upfirdn2d(x: jax.Array, kernel: np.ndarray, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> jax.Array:
  """Upsample (zero insertion), pad (pad[0] before, pad[1] after), FIR-filter, downsample; x: [B, H, W, C].

  ``kernel`` is 1-D (separable: the 2-D filter is outer(kernel, kernel), applied one axis at a time) or
  2-D (a depthwise convolution). Output size (H up + pad[0] + pad[1] - k) // down + 1 per spatial axis.
  """
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim == 1:
    for axis in (1, 2):
      x = _upfirdn1d(x, kernel, up, down, pad, axis)
    return x
  c = x.shape[-1]
  w = jnp.asarray(kernel[::-1, ::-1], x.dtype)[:, :, None, None]          # true convolution: flip
  w = jnp.tile(w, (1, 1, 1, c))                                           # depthwise: [kh, kw, 1, C]
  # lhs_dilation inserts up-1 zeros *between* pixels; one more block of up-1 zeros goes after the last.
  padding = [(pad[0], pad[1] + up - 1)] * 2
  return jax.lax.conv_general_dilated(x, w, window_strides=(down, down), padding=padding, lhs_dilation=(up, up),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def upsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, factor H, factor W, C] through the FIR kernel (gain factor^2 keeps the mean)."""
  kernel = fir_kernel_1d(k, factor**2)
  p = kernel.shape[0] - factor
  return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, H / factor, W / factor, C] through the FIR kernel."""
  kernel = fir_kernel_1d(k)
  p = kernel.shape[0] - factor
  return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
  """Fused factor-x upsampling and convolution with w [kh, kw, C_in, C_out] (a strided transposed
  convolution followed by the FIR filter, padded once)."""
  kw = w.shape[0]
  x = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding=[(kw - 1, kw - 1)] * 2,
                                   lhs_dilation=(factor, factor), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  kernel = fir_kernel_1d(k, factor**2)
  p = (kernel.shape[0] - factor) - (kw - 1)
  return upfirdn2d(x, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
  """Fused FIR filter and strided convolution with w [kh, kw, C_in, C_out]: [B, H, W, C_in] -> [B, H/2, W/2, C_out]."""
  kw = w.shape[0]
  kernel = fir_kernel_1d(k)
  p = (kernel.shape[0] - factor) + (kw - 1)
  x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
  return jax.lax.conv_general_dilated(x, w, window_strides=(factor, factor), padding="VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling: [B, H, W, C] -> [B, factor H, factor W, C]."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Average pooling: [B, H, W, C] -> [B, H / factor, W / factor, C]."""
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
