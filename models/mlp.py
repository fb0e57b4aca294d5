"""A time-conditioned MLP score network for low-dimensional data (toys, the Gaussian-mixture oracle)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from models import layers


class MLP(nn.Module):
  """x [B, D], labels [B] -> [B, D]: residual swish MLP with the label embedded and added per layer.

  Attributes:
    hidden: width of the hidden layers.
    depth: number of hidden layers.
    embedding_type: ``"fourier"`` (labels are noise levels; log sigma is embedded) or ``"positional"``.
    fourier_scale: std of the fixed Fourier frequencies.
    nf: embedding width.
    num_classes: > 0: class-conditional (``class_labels`` [B], num_classes = the null label); 0: not.
  """

  hidden: int = 256
  depth: int = 3
  embedding_type: str = "positional"
  fourier_scale: float = 16.0
  nf: int = 64
  num_classes: int = 0

  RANGES = {"fourier_scale": (0.0, None), "num_classes": (0, None)}
  OPTIONAL = ("num_classes",)
  CHOICES = {"embedding_type": ("fourier", "positional")}

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None):
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.nf // 2, self.fourier_scale)(jnp.log(labels))
    else:
      temb = layers.timestep_embedding(labels, self.nf)
    temb = nn.Dense(self.hidden)(nn.swish(nn.Dense(self.hidden)(temb)))
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes, x.shape[0], self.hidden)
    h = nn.Dense(self.hidden)(x)
    for _ in range(self.depth):
      h = h + nn.Dense(self.hidden)(nn.swish(h + temb))
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.swish(h))
