"""Building blocks of NCSN++ / DDPM++ (Song et al. 2021, App. H) and of DDPM (Ho et al. 2020).

NHWC throughout. Initialisations follow score_sde: DDPM's variance-scaling ``default_init`` (fan_avg,
uniform), with a scale of 0 meaning 1e-10 so a zero-initialised layer still has a direction.

``dtype`` (every block and helper): the computation dtype for mixed precision; parameters stay float32
(flax's ``param_dtype``), inputs and parameters are cast to ``dtype`` inside each layer, GroupNorm
statistics and the attention softmax are computed in float32. ``None``: the inputs' dtype (float32).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from models import conv, fir, norm
from models.cotangent import materialise_cotangent

MAX_POSITIONS = 10000          # the positional embedding's longest wavelength (Vaswani et al. 2017)

# Rematerialisation of a residual or attention block in the backward pass (jax.checkpoint's policies):
# what the forward pass keeps of a block's internals; everything else is recomputed from its inputs.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,                                          # no jax.checkpoint: keep every intermediate
    "full": jax.checkpoint_policies.nothing_saveable,      # keep only the block's inputs
    "dots": jax.checkpoint_policies.dots_saveable,         # keep conv / matmul outputs; recompute norms, activations
}
COMPUTE_DTYPES = ("float32", "bfloat16")                   # mixed precision: parameters stay float32
# How the network's backward pass is computed (``training.backward``; the function and the gradient's values do
# not depend on it): "xla" = autodiff, fused as XLA decides; "materialised" = autodiff, with the cotangent of each
# convolution's, NIN's and GroupNorm's output computed once (``materialise_cotangent``); "taps" = models.conv's
# written-out VJP for the convolutions (input gradient a forward convolution, kernel gradient one matrix product
# per tap); "auto" = "materialised" on the CPU backend, where it was measured faster
# (benchmarks/results/cotangent_barrier.md), "xla" elsewhere (no GPU was measured).
BACKWARDS = ("auto", "xla", "materialised") + tuple(k for k in conv.KERNEL_GRADS if k != "conv")
BACKWARD = "xla"


def compute_dtype(name: str):
  """The layers' ``dtype`` for a ``COMPUTE_DTYPES`` name: ``None`` (inputs' dtype) for float32."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute dtype must be one of {list(COMPUTE_DTYPES)}, got {name!r}")
  return None if name == "float32" else jnp.dtype(name)


@functools.lru_cache(maxsize=None)
def rematerialised(cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
  """``cls`` itself for policy "none", else ``cls`` under flax's ``nn.remat`` with that named policy.

  flax names the wrapped class ``Checkpoint<cls>``: give its instances explicit names (the parameter tree
  must not change with the policy). ``static_argnums`` count ``self`` as 0 (e.g. 3 for a block's ``train``).
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {list(REMAT_POLICIES)}, got {policy!r}")
  if policy == "none":
    return cls
  return nn.remat(cls, policy=REMAT_POLICIES[policy], static_argnums=static_argnums)


def default_init(scale: float = 1.0):
  """DDPM's initialiser: variance scaling, fan_avg, uniform; scale 0 becomes 1e-10."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def resolve_backward(backward: str) -> str:
  """A ``BACKWARDS`` name with "auto" resolved for the default backend; ValueError naming the choices."""
  if backward not in BACKWARDS:
    raise ValueError(f"backward must be one of {list(BACKWARDS)}, got {backward!r}")
  if backward == "auto":
    return "materialised" if jax.default_backend() == "cpu" else "xla"
  return backward


def materialises(backward: str) -> bool:
  """Whether the ``BACKWARDS`` name ``backward`` materialises the layers' output cotangents."""
  return resolve_backward(backward) == "materialised"


class Conv(nn.Conv):
  """flax ``nn.Conv`` (same parameters "kernel" HWIO and "bias", same auto-name ``Conv_<i>``) whose output
  passes through ``materialise_cotangent`` when ``materialise`` is set: after the bias, so that the bias
  gradient too reads the materialised cotangent."""
  materialise: bool = False

  def __call__(self, inputs: jax.Array) -> jax.Array:
    y = super().__call__(inputs)
    return materialise_cotangent(y) if self.materialise else y


class Dense(nn.Dense):
  """flax ``nn.Dense`` (same parameters and auto-name ``Dense_<i>``), its output through
  ``materialise_cotangent`` when ``materialise`` is set."""
  materialise: bool = False

  def __call__(self, inputs: jax.Array) -> jax.Array:
    y = super().__call__(inputs)
    return materialise_cotangent(y) if self.materialise else y


def _conv(features: int, kernel: int, backward: str, **kwargs) -> Conv:
  backward = resolve_backward(backward)
  op = functools.partial(conv.conv_general_dilated, kernel_grad=backward) if backward in conv.KERNEL_GRADS else None
  return Conv(features, (kernel, kernel), conv_general_dilated=op, materialise=backward == "materialised", **kwargs)


def conv3x3(features: int, init_scale: float = 1.0, name: str | None = None, stride: int = 1, padding="SAME",
            dtype=None, backward: str = BACKWARD):
  """A 3x3 ``Conv`` (parameters "kernel" HWIO, "bias"); ``backward``: a ``BACKWARDS`` name, how its gradient is
  computed (the function and the gradient's value do not depend on it)."""
  return _conv(features, 3, backward, strides=(stride, stride), padding=padding,
               kernel_init=default_init(init_scale), name=name, dtype=dtype)


def conv1x1(features: int, init_scale: float = 1.0, name: str | None = None, dtype=None, backward: str = BACKWARD):
  """A 1x1 ``Conv`` (parameters "kernel" HWIO, "bias"); ``backward`` as in ``conv3x3``."""
  return _conv(features, 1, backward, kernel_init=default_init(init_scale), name=name, dtype=dtype)


def nin(features: int, init_scale: float = 0.1, name: str | None = None, dtype=None, backward: str = BACKWARD):
  """score_sde's NIN: a per-pixel dense layer (W [C_in, C_out], b [C_out]), init scale 0.1 by default;
  ``backward`` as in ``conv3x3``."""
  return Dense(features, kernel_init=default_init(init_scale), name=name, dtype=dtype,
               materialise=materialises(backward))


def group_norm(channels: int, max_groups: int = 32, name: str | None = None, groups: int | None = None, dtype=None,
               backward: str = BACKWARD):
  """GroupNorm with epsilon 1e-6 and min(C/4, 32) groups, as in NCSN++ (score_sde layerspp.py), or
  exactly ``groups`` groups: DDPM's blocks use 32 whatever C (score_sde ddpm.py: flax's default
  GroupNorm; score_sde_pytorch layers.py: num_groups=32), which differs from NCSN++ below C = 128.
  ``norm.GroupNorm``: flax's parameters and forward with a faster backward pass; ``backward`` as in
  ``conv3x3``."""
  return norm.GroupNorm(num_groups=groups or min(channels // 4, max_groups), epsilon=1e-6, name=name, dtype=dtype,
                        materialise=materialises(backward))


def timestep_embedding(timesteps: jax.Array, dim: int, max_positions: int = MAX_POSITIONS) -> jax.Array:
  """Sinusoidal embedding [B] -> [B, dim] (DDPM; Vaswani et al. 2017 sec. 3.5): sin and cos halves."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_positions) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def add_class_embedding(temb, class_labels, num_classes: int, batch: int, width: int, dtype=None):
  """``temb`` [B, width] plus a learned embedding of class labels [B] (ints in 0 .. num_classes).

  Index ``num_classes`` is the null label of classifier-free guidance (Ho & Salimans 2022, sec. 3.2):
  it is what ``class_labels=None`` means, and what label dropout substitutes during training. With
  ``num_classes == 0`` the network is unconditional and ``temb`` is returned unchanged. Call inside a
  compact ``__call__`` (the embedding is the parent's submodule ``class_embed``).

  Raises:
    ValueError: labels given to an unconditional network.
  """
  if num_classes == 0:
    if class_labels is not None:
      raise ValueError("class labels were given to a network with model.num_classes = 0")
    return temb
  if class_labels is None:
    class_labels = jnp.full((batch,), num_classes, jnp.int32)
  emb = nn.Embed(num_classes + 1, width, name="class_embed")(jnp.asarray(class_labels, jnp.int32))
  emb = emb if dtype is None else emb.astype(dtype)
  return emb if temb is None else temb + emb


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
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = group_norm(c, self.max_groups, groups=self.groups, dtype=self.dtype, backward=self.backward)(x)
    q, k, v = (nin(c, dtype=self.dtype, backward=self.backward)(y) for _ in range(3))
    logits = jnp.einsum("bhwc,bijc->bhwij", q, k) * c ** -0.5
    attn = jax.nn.softmax(logits.reshape(b, h, w, h * w).astype(jnp.float32), axis=-1).reshape(b, h, w, h, w)
    y = jnp.einsum("bhwij,bijc->bhwc", attn.astype(v.dtype), v)
    y = nin(c, init_scale=self.init_scale, dtype=self.dtype, backward=self.backward)(y)
    return (x + y) / math.sqrt(2.0) if self.skip_rescale else x + y


class Upsample(nn.Module):
  """2x upsampling: FIR (optionally fused with a 3x3 conv) or nearest-neighbour (then an optional conv)."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      h = fir.naive_upsample_2d(x)
      return conv3x3(out_ch, dtype=self.dtype, backward=self.backward)(h) if self.with_conv else h
    if not self.with_conv:
      return fir.upsample_2d(x, self.fir_kernel)
    w = self.param("kernel", default_init(), (3, 3, x.shape[-1], out_ch))
    b = self.param("bias", nn.initializers.zeros, (out_ch,))
    x, w, b = promote_dtype(x, w, b, dtype=self.dtype)
    return fir.upsample_conv_2d(x, w, self.fir_kernel) + b


class Downsample(nn.Module):
  """2x downsampling: FIR (optionally fused with a 3x3 conv), a strided 3x3 conv, or average pooling."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      if not self.with_conv:
        return fir.naive_downsample_2d(x)
      # TF's 'SAME' for a stride-2 3x3 conv: pad right/bottom only
      return conv3x3(out_ch, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype, backward=self.backward)(x)
    if not self.with_conv:
      return fir.downsample_2d(x, self.fir_kernel)
    w = self.param("kernel", default_init(), (3, 3, x.shape[-1], out_ch))
    b = self.param("bias", nn.initializers.zeros, (out_ch,))
    x, w, b = promote_dtype(x, w, b, dtype=self.dtype)
    return fir.conv_downsample_2d(x, w, self.fir_kernel) + b


class ResnetBlockDDPM(nn.Module):
  """DDPM's residual block (+ NCSN++'s skip_rescale): GN, act, conv, + Dense(temb), GN, act, dropout, conv."""

  act: Callable
  out_ch: int | None = None
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0
  max_groups: int = 32
  groups: int | None = None          # DDPM: 32 (see group_norm)
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    dt = self.dtype
    h = self.act(group_norm(c, self.max_groups, groups=self.groups, dtype=dt, backward=self.backward)(x))
    h = conv3x3(out_ch, dtype=dt, backward=self.backward)(h)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init(), dtype=dt)(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch, self.max_groups, groups=self.groups, dtype=dt, backward=self.backward)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale, dtype=dt, backward=self.backward)(h)
    if c != out_ch:
      x = nin(out_ch, dtype=dt, backward=self.backward)(x)
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
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    dt = self.dtype
    h = self.act(group_norm(c, dtype=dt, backward=self.backward)(x))
    if self.up:
      up = (lambda v: fir.upsample_2d(v, self.fir_kernel)) if self.fir else fir.naive_upsample_2d
      h, x = up(h), up(x)
    elif self.down:
      down = (lambda v: fir.downsample_2d(v, self.fir_kernel)) if self.fir else fir.naive_downsample_2d
      h, x = down(h), down(x)
    h = conv3x3(out_ch, dtype=dt, backward=self.backward)(h)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init(), dtype=dt)(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch, dtype=dt, backward=self.backward)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale, dtype=dt, backward=self.backward)(h)
    if c != out_ch or self.up or self.down:
      x = conv1x1(out_ch, dtype=dt, backward=self.backward)(x)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
  """Merges a 1x1-projected pyramid input into h by concatenation or sum (NCSN++ input_skip)."""

  method: str = "sum"
  dtype: Any = None
  backward: str = BACKWARD           # how the backward pass is computed (BACKWARDS)

  @nn.compact
  def __call__(self, pyramid, h):
    p = conv1x1(h.shape[-1], dtype=self.dtype, backward=self.backward)(pyramid)
    return jnp.concatenate([p, h], axis=-1) if self.method == "cat" else p + h


ACTIVATIONS: dict[str, Any] = {"swish": nn.swish, "silu": nn.swish, "relu": nn.relu, "elu": nn.elu,
                               "lrelu": lambda v: nn.leaky_relu(v, 0.2)}
