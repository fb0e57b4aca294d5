"""GroupNorm (Wu & He 2018) with a hand-written backward pass; parameters and forward as flax's ``nn.GroupNorm``.

Forward (Wu & He 2018, eq. 1-2 with per-(sample, group) statistics): x_hat = (x - mu) / sqrt(var + eps),
y = gamma x_hat + beta, with mu and var = E[x^2] - mu^2 (clamped at 0) over the group's pixels and
channels, as flax computes them. Backward, per (sample, group) of n = H W C/G elements and with
g = dy * gamma:
    d beta_c  = sum_{b,hw} dy,        d gamma_c = sum_{b,hw} dy x_hat,
    dx        = (g - mean(g) - x_hat mean(g x_hat)) / sqrt(var + eps),
where mean(g) = sum_c gamma_c S1[b, c] / n and mean(g x_hat) = sum_c gamma_c S2[b, c] / n come from the two
per-(sample, channel) sums S1 = sum_hw dy and S2 = sum_hw dy x_hat. So the backward reads dy and x once for
the two sums and once for dx. XLA's own derivative of the forward ran 1.5-1.6x slower on XLA:CPU
(benchmarks/networks/networks_vs_reference.py): it re-derives the statistics' chain rule through several
fused reductions. On small images it is the other way round: at 8x8 and 4x4 (the digits U-Net, batch 128)
the hand-written backward took 1.6-2.2x flax's time (more, smaller fusions: per-launch costs dominate), so
images under CUSTOM_BACKWARD_MIN_PIXELS pixels are differentiated by autodiff (same forward).
tests/test_models.py checks output and gradients against ``nn.GroupNorm`` on both paths.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.cotangent import materialise_cotangent


# Fewest pixels (H W) for the hand-written backward. GN + swish forward + backward, ours / flax, XLA:CPU,
# 2 threads (benchmarks/group_norm.py): 8x8 and 4x4 at batch 128 1.4-2.2x, [8, 8, 8, 256] 0.92x;
# 16x16 0.71-1.16x; 32x32 0.88-1.07x.
CUSTOM_BACKWARD_MIN_PIXELS = 256


def _grouped(x: jax.Array, groups: int) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h * w, groups, c // groups)


def _statistics(xg: jax.Array, eps: float):
  """Per (sample, group) mean and 1 / sqrt(var + eps) of xg [B, HW, G, C/G], shaped [B, 1, G, 1]."""
  mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(xg), axis=(1, 3), keepdims=True) - jnp.square(mean), 0.0)
  return mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float) -> jax.Array:
  """x [B, H, W, C] (float32), scale and bias [C] -> [B, H, W, C]."""
  return _forward(x, scale, bias, groups, eps)[0]


def _forward(x, scale, bias, groups, eps):
  xg = _grouped(x, groups)
  mean, rstd = _statistics(xg, eps)
  y = ((xg - mean) * rstd).reshape(x.shape) * scale + bias
  return y, (x, scale, mean, rstd)


def _backward(groups, eps, residuals, dy):
  del eps
  x, scale, mean, rstd = residuals
  c = x.shape[-1]
  xg = _grouped(x, groups)
  x_hat = (xg - mean) * rstd
  dyg = _grouped(dy, groups)
  s1 = jnp.sum(dyg, axis=1, keepdims=True)                               # [B, 1, G, C/G]
  s2 = jnp.sum(dyg * x_hat, axis=1, keepdims=True)
  gamma = scale.reshape(1, 1, groups, c // groups)
  n = xg.shape[1] * xg.shape[3]
  mean_g = jnp.sum(s1 * gamma, axis=3, keepdims=True) / n
  mean_g_xhat = jnp.sum(s2 * gamma, axis=3, keepdims=True) / n
  dx = (rstd * (dyg * gamma - mean_g - x_hat * mean_g_xhat)).reshape(x.shape)
  return dx, jnp.sum(s2, axis=(0, 1)).reshape(c), jnp.sum(s1, axis=(0, 1)).reshape(c)


group_norm.defvjp(_forward, _backward)


class GroupNorm(nn.Module):
  """``nn.GroupNorm(num_groups, epsilon)`` for NHWC images: the same parameters ("scale" ones, "bias"
  zeros, [C]) and forward; statistics in float32, output in ``dtype`` (None: the input's, promoted with
  the float32 parameters, as flax does)."""

  num_groups: int
  epsilon: float = 1e-6
  dtype: Any = None
  materialise: bool = False     # the output's cotangent computed once (models.layers.materialise_cotangent)

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if x.ndim != 4 or c % self.num_groups:
      raise ValueError(f"GroupNorm needs [B, H, W, C] with C divisible by {self.num_groups} groups, got {x.shape}")
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    x32 = x.astype(jnp.float32)
    if x.shape[1] * x.shape[2] >= CUSTOM_BACKWARD_MIN_PIXELS:
      y = group_norm(x32, scale, bias, self.num_groups, self.epsilon)
    else:
      y = _forward(x32, scale, bias, self.num_groups, self.epsilon)[0]     # autodiff's backward
    y = y.astype(self.dtype or jnp.promote_types(x.dtype, jnp.float32))
    return materialise_cotangent(y) if self.materialise else y
