"""A noise-conditional classifier p_t(y | x_t) for classifier guidance (Song et al. 2021, sec. 5 and App. I.1).

It sees a perturbed image and the noise label of its time (``models.noise_labels``, as the score
networks) and returns class logits; ``samplers.guided_score_fn`` adds the gradient of its log-softmax
to a score. The body is the down-sampling half of the DDPM++ U-Net (residual blocks with the time
embedding added, average-pool down-sampling), then GroupNorm, global mean pooling and a linear layer,
like the VE classifier of score_sde's class-conditional CIFAR-10 experiment (a Wide ResNet with the
noise level embedded).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.score import discrete_coefs, noise_labels


class NoiseConditionalClassifier(nn.Module):
  """(x_t [B, H, W, C] in the model's data range, noise labels [B]) -> logits [B, num_classes].

  Attributes:
    num_classes: the number of classes (the logits' width).
    nf, ch_mult, num_res_blocks, dropout, nonlinearity, embedding_type, fourier_scale, centered: as
      ``NCSNpp`` (one residual block stack per resolution, down-sampling between resolutions).

  The input is divided by sqrt(a(t)^2 + s(t)^2) -- passed as ``input_scale`` [B] by the caller --, the
  standard deviation of x_t for unit-variance data, so every noise level reaches the network at a
  comparable scale (EDM's c_in, Karras et al. 2022 Table 1).
  """

  num_classes: int = 10
  nf: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 2
  dropout: float = 0.0
  nonlinearity: str = "swish"
  embedding_type: str = "positional"
  fourier_scale: float = 16.0
  centered: bool = False

  RANGES = {"dropout": (0.0, 1.0), "fourier_scale": (0.0, None)}
  NONEMPTY = ("ch_mult",)
  CHOICES = {"embedding_type": ("fourier", "positional"), "nonlinearity": tuple(layers.ACTIVATIONS)}

  @nn.compact
  def __call__(self, x, labels, train: bool = False, input_scale=None):
    act = layers.ACTIVATIONS[self.nonlinearity]
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.nf, self.fourier_scale)(jnp.log(labels))
    else:
      temb = layers.timestep_embedding(labels, self.nf)
    temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init())(temb)
    temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init())(act(temb))
    h = x if self.centered else 2 * x - 1.0
    if input_scale is not None:
      h = h * input_scale[:, None, None, None]
    h = layers.conv3x3(self.nf)(h)
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = layers.ResnetBlockDDPM(act=act, out_ch=self.nf * mult, dropout=self.dropout)(h, temb, train)
      if level != len(self.ch_mult) - 1:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = act(layers.group_norm(h.shape[-1])(h))
    return nn.Dense(self.num_classes)(jnp.mean(h, axis=(1, 2)))


def get_logits_fn(sde, apply_fn: Callable, params, *, continuous: bool = True, train: bool = False, rngs=None):
  """``logits_fn(x_t [B, H, W, C], t [B]) -> [B, num_classes]`` of a ``NoiseConditionalClassifier`` at time t.

  The classifier gets the score networks' noise label of t (``models.noise_labels``) and the input scale
  1 / sqrt(a(t)^2 + s(t)^2) of x_t = a(t) x_0 + s(t) z (continuous kernel, or the ladder's levels).
  """

  def logits_fn(x, t):
    a, s = sde.marginal_coefs(t) if continuous else discrete_coefs(sde, t)
    return apply_fn(params, x, noise_labels(sde, t, continuous), train, rngs,
                    input_scale=jax.lax.rsqrt(jnp.square(a) + jnp.square(s)))

  return logits_fn


def get_log_likelihood_fn(logits_fn: Callable, labels: jax.Array) -> Callable:
  """``log_likelihood_fn(x, t) -> [B]``: log p_t(y | x_t) = log softmax(logits)[y] for fixed labels [B],
  the input of ``samplers.guided_score_fn``."""
  labels = jnp.asarray(labels, jnp.int32)

  def log_likelihood_fn(x, t):
    log_p = jax.nn.log_softmax(logits_fn(x, t), axis=-1)
    return jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]

  return log_likelihood_fn
