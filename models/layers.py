"""Building blocks of NCSN++ / DDPM++ (Song et al. 2021, App. H) and of DDPM (Ho et al. 2020).

NHWC throughout. Initialisations follow score_sde: DDPM's variance-scaling ``default_init`` (fan_avg,
uniform), with a scale of 0 meaning 1e-10 so a zero-initialised layer still has a direction.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import fir

MAX_POSITIONS = 10000          # the positional embedding's longest wavelength (Vaswani et al. 2017)


def default_init(scale: float = 1.0):
  """DDPM's initialiser: variance scaling, fan_avg, uniform; scale 0 becomes 1e-10."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def conv3x3(features: int, init_scale: float = 1.0, name: str | None = None, stride: int = 1, padding="SAME"):
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=padding, kernel_init=default_init(init_scale),
                 name=name)


def conv1x1(features: int, init_scale: float = 1.0, name: str | None = None):
  return nn.Conv(features, (1, 1), kernel_init=default_init(init_scale), name=name)


def nin(features: int, init_scale: float = 0.1, name: str | None = None):
  """score_sde's NIN: a per-pixel dense layer (W [C_in, C_out], b [C_out]), init scale 0.1 by default."""
  return nn.Dense(features, kernel_init=default_init(init_scale), name=name)


def group_norm(channels: int, max_groups: int = 32, name: str | None = None, groups: int | None = None):
  """GroupNorm with epsilon 1e-6 and min(C/4, 32) groups, as in NCSN++ (score_sde layerspp.py), or
  exactly ``groups`` groups: DDPM's blocks use 32 whatever C (score_sde ddpm.py: flax's default
  GroupNorm; score_sde_pytorch layers.py: num_groups=32), which differs from NCSN++ below C = 128."""
  return nn.GroupNorm(num_groups=groups or min(channels // 4, max_groups), epsilon=1e-6, name=name)


def timestep_embedding(timesteps: jax.Array, dim: int, max_positions: int = MAX_POSITIONS) -> jax.Array:
  """Sinusoidal embedding [B] -> [B, dim] (DDPM; Vaswani et al. 2017 sec. 3.5): sin and cos halves."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_positions) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class GaussianFourierProjection(nn.Module):
  """[sin(2 pi W log sigma), cos(2 pi W log sigma)] with fixed W ~ N(0, scale^2) (Tancik et al. 2020).

  W is stored with the parameters (counted, as in score_sde) but never trained: gradients are
  stopped, so Adam without weight decay leaves it unchanged.
  """

  embedding_size: int = 256
  scale: float = 16.0

  @nn.compact
  def __call__(self, x):
    w = self.param("W", nn.initializers.normal(self.scale), (self.embedding_size,))
    proj = x[:, None] * jax.lax.stop_gradient(w)[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class AttnBlock(nn.Module):
  """Self-attention over the H W positions (DDPM's block; NCSN++ adds ``skip_rescale``)."""

  skip_rescale: bool = False
  init_scale: float = 0.0
  max_groups: int = 32
  groups: int | None = None          # DDPM: 32 (see group_norm)

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = group_norm(c, self.max_groups, groups=self.groups)(x)
    q, k, v = (nin(c)(y) for _ in range(3))
    logits = jnp.einsum("bhwc,bijc->bhwij", q, k) * c ** -0.5
    attn = jax.nn.softmax(logits.reshape(b, h, w, h * w), axis=-1).reshape(b, h, w, h, w)
    y = nin(c, init_scale=self.init_scale)(jnp.einsum("bhwij,bijc->bhwc", attn, v))
    return (x + y) / math.sqrt(2.0) if self.skip_rescale else x + y


class Upsample(nn.Module):
  """2x upsampling: FIR (optionally fused with a 3x3 conv) or nearest-neighbour (then an optional conv)."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      h = fir.naive_upsample_2d(x)
      return conv3x3(out_ch)(h) if self.with_conv else h
    if not self.with_conv:
      return fir.upsample_2d(x, self.fir_kernel)
    w = self.param("kernel", default_init(), (3, 3, x.shape[-1], out_ch))
    return fir.upsample_conv_2d(x, w, self.fir_kernel) + self.param("bias", nn.initializers.zeros, (out_ch,))


class Downsample(nn.Module):
  """2x downsampling: FIR (optionally fused with a 3x3 conv), a strided 3x3 conv, or average pooling."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      if not self.with_conv:
        return fir.naive_downsample_2d(x)
      return conv3x3(out_ch, stride=2, padding=((0, 1), (0, 1)))(x)     # 'SAME' as in TF: pad right/bottom
    if not self.with_conv:
      return fir.downsample_2d(x, self.fir_kernel)
    w = self.param("kernel", default_init(), (3, 3, x.shape[-1], out_ch))
    return fir.conv_downsample_2d(x, w, self.fir_kernel) + self.param("bias", nn.initializers.zeros, (out_ch,))


class ResnetBlockDDPM(nn.Module):
  """DDPM's residual block (+ NCSN++'s skip_rescale): GN, act, conv, + Dense(temb), GN, act, dropout, conv."""

  act: Callable
  out_ch: int | None = None
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0
  max_groups: int = 32
  groups: int | None = None          # DDPM: 32 (see group_norm)

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = conv3x3(out_ch)(self.act(group_norm(c, self.max_groups, groups=self.groups)(x)))
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch, self.max_groups, groups=self.groups)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale)(h)
    if c != out_ch:
      x = nin(out_ch)(x)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
  """BigGAN-style residual block with optional up/down-sampling inside (Brock et al. 2019; NCSN++)."""

  act: Callable
  out_ch: int | None = None
  up: bool = False
  down: bool = False
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = self.act(group_norm(c)(x))
    if self.up:
      up = (lambda v: fir.upsample_2d(v, self.fir_kernel)) if self.fir else fir.naive_upsample_2d
      h, x = up(h), up(x)
    elif self.down:
      down = (lambda v: fir.downsample_2d(v, self.fir_kernel)) if self.fir else fir.naive_downsample_2d
      h, x = down(h), down(x)
    h = conv3x3(out_ch)(h)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale)(h)
    if c != out_ch or self.up or self.down:
      x = conv1x1(out_ch)(x)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
  """Merges a 1x1-projected pyramid input into h by concatenation or sum (NCSN++ input_skip)."""

  method: str = "sum"

  @nn.compact
  def __call__(self, pyramid, h):
    p = conv1x1(h.shape[-1])(pyramid)
    return jnp.concatenate([p, h], axis=-1) if self.method == "cat" else p + h


ACTIVATIONS: dict[str, Any] = {"swish": nn.swish, "silu": nn.swish, "relu": nn.relu, "elu": nn.elu,
                               "lrelu": lambda v: nn.leaky_relu(v, 0.2)}
