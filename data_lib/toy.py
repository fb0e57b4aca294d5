"""Toy data: samples of the Gaussian-mixture oracle with the batch interface of ``ImageData``.

``batch(step, B)`` is a pure function of (seed, split, step), like the image data, so a resumed toy run
sees the batches an uninterrupted one would; the test split is a fixed sample.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from data_lib.gmm import GaussianMixture, example_mixture


@dataclasses.dataclass
class MixtureData:
  """Batches [B, D] (float32) drawn from ``mixture``; ``size`` is the length of one evaluation pass."""

  mixture: GaussianMixture
  seed: int = 0
  split: int = 0                       # 0 train, 1 test: independent streams for the same seed
  size: int = 4096

  def __len__(self):
    return self.size

  def _key(self, index: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), self.split), index)

  def batch(self, step: int, batch_size: int) -> np.ndarray:
    """Batch number ``step``: an exact sample [batch_size, D] of the mixture."""
    return np.asarray(self.mixture.sample(self._key(step), batch_size), np.float32)

  def epoch_batches(self, batch_size: int):
    """The split's fixed sample of ``size`` points, in batches (the last possibly smaller)."""
    data = np.asarray(self.mixture.sample(self._key(2**31 - 1), self.size), np.float32)
    for start in range(0, self.size, batch_size):
      yield data[start:start + batch_size]


def get_mixture(data_config) -> GaussianMixture:
  """The mixture of config.data (``mixture="example"``: ``data_lib.example_mixture(dim)``)."""
  name = str(data_config.get("mixture", "example"))
  if name != "example":
    raise ValueError(f"data.mixture must be one of ['example'], got {name!r}")
  return example_mixture(int(data_config.dim))
