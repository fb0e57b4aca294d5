"""NCSN++ / DDPM++: one configurable U-Net (Song et al. 2021, App. H), and DDPM's U-Net (Ho et al. 2020).

Structure and parameter counts follow score_sde's ``models/ncsnpp.py`` and ``models/ddpm.py``
(checked in tests/test_models.py against the reference's counts for every CIFAR-10 configuration);
the code is written for Flax linen, NHWC. The networks map (x [B, H, W, C], labels [B]) to an
output shaped like x; turning that output into a score (dividing by sigma, by the marginal std,
...) is ``models.get_score_fn``'s job, so the networks know nothing of the SDE.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers

# Fields set from config.training by models.get_model (how to run, not what the network is): never in config.model.
_RUN_FIELDS = ("remat", "compute_dtype", "backward")


def _block_factory(remat: str) -> Callable:
  """``block(cls, static_argnums=())`` -> constructor of ``cls`` under the remat policy, naming each
  instance ``<cls>_<k>`` as flax's automatic names would, so the parameter tree is the policy's invariant."""
  counts: collections.Counter = collections.Counter()

  def block(cls, static_argnums=()):
    wrapped = layers.rematerialised(cls, remat, static_argnums)

    def make(**kwargs):
      name = f"{cls.__name__}_{counts[cls.__name__]}"
      counts[cls.__name__] += 1
      return wrapped(name=name, **kwargs)

    return make

  return block


TRAIN_ARG = (3,)       # static argnums of a residual block's (self, x, temb, train): train is a Python bool


class NCSNpp(nn.Module):
  """NCSN++ (``resblock_type="biggan"``, FIR, Fourier) and DDPM++ (``fir=False``, positional) in one class.

  Attributes (score_sde's ``config.model`` names):
    nf: base width; the time embedding is 4 nf wide.
    ch_mult: width multiplier per resolution (len = number of resolutions).
    num_res_blocks: residual blocks per resolution (one more on the way up).
    attn_resolutions: resolutions (image side in pixels) with self-attention.
    dropout: dropout rate inside residual blocks (active with ``train=True``).
    resamp_with_conv: up/down-sampling layers carry a 3x3 convolution (DDPM blocks).
    fir, fir_kernel: FIR resampling and its 1-D kernel.
    resblock_type: ``"biggan"`` (resampling inside residual blocks) or ``"ddpm"``.
    progressive: output pyramid ``"none" | "output_skip" | "residual"``.
    progressive_input: input pyramid ``"none" | "input_skip" | "residual"``.
    progressive_combine: ``"sum" | "cat"`` for ``input_skip``.
    embedding_type: ``"fourier"`` (labels are noise levels sigma; log sigma is embedded) or
      ``"positional"`` (labels are time steps).
    fourier_scale: std of the fixed Fourier frequencies.
    conditional: condition on the labels at all.
    num_classes: > 0: a class-conditional network (classifier-free guidance); ``class_labels`` [B] in
      0 .. num_classes, num_classes (or None) being the null label. 0: unconditional, score_sde's.
    skip_rescale: divide residual sums by sqrt 2.
    init_scale: scale of the last layer of each block (0 -> 1e-10, so blocks start near identity).
    nonlinearity: a name in ``layers.ACTIVATIONS``.
    centered: inputs are already in [-1, 1]; otherwise [0, 1] inputs are mapped by 2x - 1.
    remat: ``layers.REMAT_POLICIES`` name applied to every residual and attention block (from
      ``training.remat``; the parameters do not depend on it).
    compute_dtype: ``layers.COMPUTE_DTYPES`` name for the layers' computation (from
      ``training.compute_dtype``); parameters, the Fourier/positional embedding and the output are float32.
    backward: ``layers.BACKWARDS`` name: how the backward pass is computed (from ``training.backward``; "xla"
      autodiff's, "materialised" autodiff's with each conv / NIN / GroupNorm output's cotangent computed once,
      "taps" ``models.conv``'s written-out VJP for the 3x3 and 1x1 convolutions; FIR-fused resampling
      convolutions always use autodiff's). The parameters, the function and the gradient do not depend on it.
  """

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  resblock_type: str = "biggan"
  progressive: str = "none"
  progressive_input: str = "residual"
  progressive_combine: str = "sum"
  embedding_type: str = "fourier"
  fourier_scale: float = 16.0
  conditional: bool = True
  num_classes: int = 0
  skip_rescale: bool = True
  init_scale: float = 0.0
  nonlinearity: str = "swish"
  centered: bool = False
  remat: str = "none"
  compute_dtype: str = "float32"
  backward: str = "xla"

  RANGES = {"dropout": (0.0, 1.0), "fourier_scale": (0.0, None), "init_scale": (0.0, None), "num_classes": (0, None)}
  OPTIONAL = ("num_classes",)      # may be absent from a config (score_sde's): the default is used
  NONEMPTY = ("ch_mult", "fir_kernel")
  RUN_FIELDS = _RUN_FIELDS
  CHOICES = {
      "resblock_type": ("biggan", "ddpm"),
      "progressive": ("none", "output_skip", "residual"),
      "progressive_input": ("none", "input_skip", "residual"),
      "progressive_combine": ("sum", "cat"),
      "embedding_type": ("fourier", "positional"),
      "nonlinearity": tuple(layers.ACTIVATIONS),
  }

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None):
    act = layers.ACTIVATIONS[self.nonlinearity]
    channels = x.shape[-1]
    n_res = len(self.ch_mult)
    root2 = math.sqrt(2.0)
    dt = layers.compute_dtype(self.compute_dtype)
    block = _block_factory(self.remat)

    def resblock(out_ch=None, up=False, down=False):
      common = dict(act=act, out_ch=out_ch, dropout=self.dropout, skip_rescale=self.skip_rescale,
                    init_scale=self.init_scale, dtype=dt, backward=self.backward)
      if self.resblock_type == "ddpm":
        return block(layers.ResnetBlockDDPM, TRAIN_ARG)(**common)
      return block(layers.ResnetBlockBigGAN, TRAIN_ARG)(up=up, down=down, fir=self.fir, fir_kernel=self.fir_kernel,
                                                         **common)

    def attn():
      return block(layers.AttnBlock)(skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=dt,
                                     backward=self.backward)

    def head(out_ch, init_scale=1.0):
      return lambda h: layers.conv3x3(out_ch, init_scale=init_scale, dtype=dt, backward=self.backward)(
          act(layers.group_norm(h.shape[-1], dtype=dt, backward=self.backward)(h)))

    # Time / noise-level embedding.
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.nf, self.fourier_scale)(jnp.log(labels))
    else:
      temb = layers.timestep_embedding(labels, self.nf)
    if self.conditional:
      temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init(), dtype=dt)(temb)
      temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init(), dtype=dt)(act(temb))
    else:
      temb = None
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes, x.shape[0], 4 * self.nf, dt)

    if not self.centered:
      x = 2 * x - 1.0                                            # [0, 1] data to [-1, 1]
    out_dtype = x.dtype
    x = x if dt is None else x.astype(dt)

    # Downsampling path.
    pyramid_in = x if self.progressive_input != "none" else None
    hs = [layers.conv3x3(self.nf, dtype=dt, backward=self.backward)(x)]
    for level in range(n_res):
      for _ in range(self.num_res_blocks):
        h = resblock(self.nf * self.ch_mult[level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if level != n_res - 1:
        if self.resblock_type == "ddpm":
          h = layers.Downsample(with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=self.fir_kernel,
                                dtype=dt, backward=self.backward)(hs[-1])
        else:
          h = resblock(down=True)(hs[-1], temb, train)
        if self.progressive_input == "input_skip":
          pyramid_in = layers.Downsample(fir=self.fir, fir_kernel=self.fir_kernel, dtype=dt,
                                         backward=self.backward)(pyramid_in)
          h = layers.Combine(self.progressive_combine, dtype=dt, backward=self.backward)(pyramid_in, h)
        elif self.progressive_input == "residual":
          pyramid_in = layers.Downsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                         fir_kernel=self.fir_kernel, dtype=dt, backward=self.backward)(pyramid_in)
          pyramid_in = (pyramid_in + h) / root2 if self.skip_rescale else pyramid_in + h
          h = pyramid_in
        hs.append(h)

    # Middle.
    h = resblock()(hs[-1], temb, train)
    h = attn()(h)
    h = resblock()(h, temb, train)

    # Upsampling path.
    pyramid = None
    for level in reversed(range(n_res)):
      for _ in range(self.num_res_blocks + 1):
        h = resblock(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn()(h)
      if self.progressive == "output_skip":
        out = head(channels, self.init_scale)(h)
        pyramid = out if level == n_res - 1 else layers.Upsample(fir=self.fir, fir_kernel=self.fir_kernel,
                                                                 dtype=dt, backward=self.backward)(pyramid) + out
      elif self.progressive == "residual":
        if level == n_res - 1:
          pyramid = head(h.shape[-1])(h)
        else:
          pyramid = layers.Upsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                    fir_kernel=self.fir_kernel, dtype=dt, backward=self.backward)(pyramid)
          pyramid = (pyramid + h) / root2 if self.skip_rescale else pyramid + h
          h = pyramid
      if level != 0:
        if self.resblock_type == "ddpm":
          h = layers.Upsample(with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=self.fir_kernel, dtype=dt,
                              backward=self.backward)(h)
        else:
          h = resblock(up=True)(h, temb, train)
    assert not hs

    if self.progressive == "output_skip":
      return pyramid.astype(out_dtype)
    return head(channels, self.init_scale)(h).astype(out_dtype)


DDPM_GROUPS = 32     # DDPM's GroupNorms: 32 groups whatever the width (see layers.group_norm)


class DDPM(nn.Module):
  """DDPM's U-Net (Ho et al. 2020; score_sde ``models/ddpm.py``), the VP discrete baseline.

  Attributes as ``NCSNpp`` (nf, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv,
  conditional, num_classes, nonlinearity, centered, remat, compute_dtype); labels are time steps, positionally embedded.

  As in score_sde, attention on the way up comes once per resolution, after its residual blocks
  (Ho et al.'s TF code attends after every up block): on CIFAR-10 that is 35,218,947 parameters,
  two 256-channel attention blocks (2 x 263,680) fewer than the original DDPM.
  """

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  num_classes: int = 0
  nonlinearity: str = "swish"
  centered: bool = False
  remat: str = "none"
  compute_dtype: str = "float32"
  backward: str = "xla"

  RANGES = {"dropout": (0.0, 1.0), "num_classes": (0, None)}
  OPTIONAL = ("num_classes",)
  NONEMPTY = ("ch_mult",)
  MULTIPLE_OF = {"nf": DDPM_GROUPS}
  RUN_FIELDS = _RUN_FIELDS
  CHOICES = {"nonlinearity": tuple(layers.ACTIVATIONS)}

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None):
    act = layers.ACTIVATIONS[self.nonlinearity]
    channels = x.shape[-1]
    n_res = len(self.ch_mult)
    groups = DDPM_GROUPS
    dt = layers.compute_dtype(self.compute_dtype)
    block = _block_factory(self.remat)
    resblock = lambda out_ch=None: block(layers.ResnetBlockDDPM, TRAIN_ARG)(
        act=act, out_ch=out_ch, dropout=self.dropout, groups=groups, dtype=dt, backward=self.backward)
    attn = lambda: block(layers.AttnBlock)(groups=groups, dtype=dt, backward=self.backward)
    temb = None
    if self.conditional:
      temb = layers.timestep_embedding(labels, self.nf)
      temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init(), dtype=dt)(temb)
      temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init(), dtype=dt)(act(temb))
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes, x.shape[0], 4 * self.nf, dt)
    h = x if self.centered else 2 * x - 1.0
    out_dtype = h.dtype
    h = h if dt is None else h.astype(dt)
    hs = [layers.conv3x3(self.nf, dtype=dt, backward=self.backward)(h)]
    for level in range(n_res):
      for _ in range(self.num_res_blocks):
        h = resblock(self.nf * self.ch_mult[level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if level != n_res - 1:
        hs.append(layers.Downsample(with_conv=self.resamp_with_conv, dtype=dt, backward=self.backward)(hs[-1]))
    h = resblock()(hs[-1], temb, train)
    h = attn()(h)
    h = resblock()(h, temb, train)
    for level in reversed(range(n_res)):
      for _ in range(self.num_res_blocks + 1):
        h = resblock(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn()(h)
      if level != 0:
        h = layers.Upsample(with_conv=self.resamp_with_conv, dtype=dt, backward=self.backward)(h)
    assert not hs
    h = act(layers.group_norm(h.shape[-1], groups=groups, dtype=dt, backward=self.backward)(h))
    return layers.conv3x3(channels, init_scale=0.0, dtype=dt, backward=self.backward)(h).astype(out_dtype)
