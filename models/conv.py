"""A 2-D convolution whose backward pass is written out as forward convolutions and matrix products.

Layouts: input ``x`` NHWC ``[B, H, W, C_in]``, kernel HWIO ``[k_h, k_w, C_in, C_out]``, output NHWC
``[B, H_out, W_out, C_out]`` with ``H_out = (H + lo + hi - k_h) // s + 1`` for stride ``s`` and padding
``(lo, hi)`` (rows; columns alike). ``conv(x, kernel, strides, padding)`` computes the same cross-correlation as
``lax.conv_general_dilated`` and defines its vector-Jacobian product (``jax.custom_vjp``) by the textbook
identities of a convolution's gradients (Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep
learning", ch. 4, transposed convolution arithmetic; Chellapilla et al. 2006, "High performance convolutional
neural networks for document processing": the gradients as products of unrolled (im2col) matrices):

* input gradient: the output gradient ``g``, dilated by the stride, convolved with the kernel flipped in
  both spatial axes and with ``C_in`` / ``C_out`` swapped, padded ``(k - 1 - lo, k - 1 - hi + r)`` where
  ``r = (H + lo + hi - k) mod s`` rows of the input were never reached by a window;
* kernel gradient, one matrix product per tap ``(i, j)``:
  ``dK[i, j] = sum_{b, h, w} x_pad[b, s h + i, s w + j, :]^T g[b, h, w, :]``, ``[C_in, C_out]``
  (``kernel_grad="taps"``), or the same sum as one forward convolution over the batch axis: the padded
  input with batch and channel axes exchanged, the output gradient as the kernel, dilated by the stride
  (``kernel_grad="conv"``).

Measured on 2 CPU cores (benchmarks/results/networks_vs_reference_conv_vjp*.md): not faster than jax's own
gradient, whose transposes XLA:CPU already runs as forward convolutions (146-196 GFLOP/s against 186-214 for
the forward, benchmarks/results/peak.md); forward + backward of the CIFAR-10 networks is 1.13-1.26x slower
with ``"taps"``. ``models.layers`` therefore keeps ``vjp="xla"`` as the default; this is the option.

``conv_general_dilated`` has ``lax.conv_general_dilated``'s signature for the subset used by
``models.layers`` (NHWC / HWIO, no dilation, one feature group), so flax's ``nn.Conv`` takes it as its
``conv_general_dilated`` field and parameter names and shapes ("kernel" HWIO, "bias") do not change.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

KERNEL_GRADS = ("taps", "conv")       # the kernel gradient's formulation (see the module docstring)
_DN = ("NHWC", "HWIO", "NHWC")


def _pads(padding, in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int]):
  """Explicit ((lo, hi), (lo, hi)) for lax's "SAME" / "VALID" or a sequence of pairs."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(tuple(in_hw), tuple(kernel_hw), tuple(strides), padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _forward(x, kernel, strides, pads, precision):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, strides, pads, kernel_grad, precision):
  return _forward(x, kernel, strides, pads, precision)


def _conv_fwd(x, kernel, strides, pads, kernel_grad, precision):
  return _forward(x, kernel, strides, pads, precision), (x, kernel)


def _input_grad(g, kernel, in_hw, strides, pads, precision):
  """[B, H, W, C_in]: g dilated by the stride, convolved with the flipped kernel, C_in <-> C_out."""
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  back = []
  for n, k, s, (lo, hi) in zip(in_hw, kernel.shape[:2], strides, pads):
    r = (n + lo + hi - k) % s            # trailing input rows no window reached (their gradient is 0)
    back.append((k - 1 - lo, k - 1 - hi + r))
  return lax.conv_general_dilated(g, flipped, (1, 1), back, lhs_dilation=tuple(strides), dimension_numbers=_DN,
                                  precision=precision)


def _kernel_grad(x, g, kernel_hw, strides, pads, kernel_grad, precision):
  """[k_h, k_w, C_in, C_out]: sum over batch and output positions of input patch times output gradient."""
  (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, g.shape[1:3]
  # crop what no window reaches, so the valid correlation below has exactly k_h x k_w outputs
  crop = [(lo, hi - (n + lo + hi - k) % s) for n, k, s, (lo, hi) in zip(x.shape[1:3], kernel_hw, strides, pads)]
  if kernel_grad == "conv":
    # batch axis of x as the contracted feature axis, C_in as the batch axis; g [B, H_out, W_out, C_out] as IHWO
    return lax.conv_general_dilated(x, g, (1, 1), crop, rhs_dilation=(sh, sw),
                                    dimension_numbers=("CHWN", "IHWO", "HWNC"), precision=precision)
  xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in crop] + [(0, 0, 0)])
  taps = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  dk = jnp.stack([jnp.einsum("bhwc,bhwo->co", t, g, precision=precision) for t in taps])
  return dk.reshape(kh, kw, *dk.shape[1:])


def _conv_bwd(strides, pads, kernel_grad, precision, res, g):
  x, kernel = res
  dx = _input_grad(g, kernel, x.shape[1:3], strides, pads, precision)
  dk = _kernel_grad(x, g, kernel.shape[:2], strides, pads, kernel_grad, precision)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1), padding="SAME",
         kernel_grad: str = "taps", precision=None) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, strides, padding)`` in NHWC / HWIO with the written-out gradient.

  Arguments:
    x: ``[B, H, W, C_in]``.
    kernel: ``[k_h, k_w, C_in, C_out]``.
    strides: ``(s_h, s_w)``.
    padding: "SAME", "VALID" or ``((lo_h, hi_h), (lo_w, hi_w))``.
    kernel_grad: one of ``KERNEL_GRADS``.

  Returns:
    ``[B, H_out, W_out, C_out]``.

  Raises:
    ValueError: an unknown ``kernel_grad``, or inputs that are not rank 4.
  """
  if kernel_grad not in KERNEL_GRADS:
    raise ValueError(f"kernel_grad must be one of {list(KERNEL_GRADS)}, got {kernel_grad!r}")
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv takes x [B, H, W, C] and kernel [kh, kw, C_in, C_out], got {x.shape} and {kernel.shape}")
  strides = tuple(int(s) for s in strides)
  pads = _pads(padding, x.shape[1:3], kernel.shape[:2], strides)
  return _conv(x, kernel, strides, pads, kernel_grad, precision)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, kernel_grad: str = "taps",
                         **unused):
  """``lax.conv_general_dilated``'s signature for flax's ``nn.Conv(conv_general_dilated=...)``: NHWC / HWIO,
  no dilation, one feature group (what ``models.layers`` builds); anything else raises ``ValueError``."""
  spec = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
  if spec != want or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())) or feature_group_count != 1:
    raise ValueError(f"models.conv handles NHWC/HWIO convolutions without dilation or groups, got "
                     f"dimension_numbers={dimension_numbers}, dilations={lhs_dilation}/{rhs_dilation}, "
                     f"feature_group_count={feature_group_count}")
  return conv(lhs, rhs, window_strides, padding, kernel_grad=kernel_grad, precision=precision)
