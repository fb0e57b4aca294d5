"""A held-out family of Gaussian mixtures, for evaluating samplers (and grids fitted to other data) on
mixtures nothing was tuned on.

``heldout_mixtures(seed)`` draws, for each dimension D in (2, 4, 8, 16), ``per_dim`` mixtures with fixed
seeds: K ~ U{2..6} modes, weights ~ Dirichlet(2) floored at 0.05, each mode an axis-aligned Gaussian with its
own std drawn log-uniformly in [0.05, 1.5] (per coordinate a factor log-uniform in [0.7, 1.4]), means ~ c N(0, I)
with the scale c log-uniform in [0.5, 10], redrawn until every two means are at least 10 times the larger
std apart (the modes stay separable, so ``GaussianMixture.mode_metrics`` can assign samples by nearest mean).
The seeds of the family are fixed; use other seeds for anything that is tuned.

``mixture_denoiser(mixture, k_max)``: the mixture's exact denoiser D(x_hat; sigma) = E[x_0 | x_0 + sigma z =
x_hat] = x_hat + sigma^2 grad log p_sigma(x_hat) (Tweedie's formula; p_sigma = the mixture convolved with
N(0, sigma^2 I), ``data_lib.gmm.perturbed_score`` with a = 1, s = sigma) as a ``jax.tree_util.Partial``
whose leaves are the mixture's arrays padded to ``k_max`` components of weight zero: mixtures of the same D
then share one compiled sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data_lib.gmm import GaussianMixture, perturbed_score

DIMS = (2, 4, 8, 16)
HELDOUT_SEED = 2026_12
# Means at least this many (larger) stds apart: the midpoint is 5 stds out, where a Gaussian's tail holds 3e-7 of
# its mass, so nearest-mean assignment misplaces no sample of n = 8192 (at 6, i.e. 3 stds, a wide mode's 0.1% tail
# inside a narrow mode's cell multiplied the narrow mode's measured std of *exact* samples by up to 3).
SEPARATION = 10.0


def _draw(rng: np.random.Generator, dim: int) -> GaussianMixture:
  k = int(rng.integers(2, 7))
  weights = np.maximum(rng.dirichlet(np.full(k, 2.0)), 0.05)
  weights /= weights.sum()
  stds = (np.exp(rng.uniform(np.log(0.05), np.log(1.5), k))[:, None]
          * np.exp(rng.uniform(np.log(0.7), np.log(1.4), (k, dim))))
  scale = float(np.exp(rng.uniform(np.log(0.5), np.log(10.0))))
  for _ in range(1000):
    means = scale * rng.standard_normal((k, dim))
    gap = np.linalg.norm(means[:, None] - means[None], axis=-1)
    need = SEPARATION * np.maximum(stds.max(1)[:, None], stds.max(1)[None])
    if np.all(gap[~np.eye(k, dtype=bool)] >= need[~np.eye(k, dtype=bool)]):
      return GaussianMixture(weights, means, stds**2)
    scale *= 1.05                                                        # too crowded: spread a little more
  raise RuntimeError("could not draw separated means")                  # unreachable: the scale grows


def heldout_mixtures(seed: int = HELDOUT_SEED, per_dim: int = 2, dims=DIMS) -> list[tuple[str, GaussianMixture]]:
  """[(name, mixture)] for each D in ``dims`` and i < ``per_dim``: mixture i of dimension D is drawn from
  ``np.random.default_rng([seed, D, i])`` (module docstring)."""
  out = []
  for dim in dims:
    for i in range(per_dim):
      m = _draw(np.random.default_rng([seed, dim, i]), dim)
      out.append((f"D{dim}-{i}", m))
  return out


def describe(mixture: GaussianMixture) -> str:
  """K, the weights, the range of the modes' stds and the smallest distance between means, in one line."""
  sd = np.sqrt(np.diagonal(np.asarray(mixture.covs, np.float64), axis1=1, axis2=2))
  mu = np.asarray(mixture.means, np.float64)
  gap = np.linalg.norm(mu[:, None] - mu[None], axis=-1)[~np.eye(len(mu), dtype=bool)].min()
  w = np.round(np.asarray(mixture.weights, np.float64), 2).tolist()
  return f"K={mixture.num_components} w={w} std {sd.min():.3g}-{sd.max():.3g} min gap {gap:.3g}"


def _denoise(arrays, x_hat, sigma):
  return x_hat + jnp.square(sigma) * perturbed_score(arrays, x_hat, 1.0, sigma)   # Tweedie's formula in x_hat


def mixture_denoiser(mixture: GaussianMixture, k_max: int = 6) -> jax.tree_util.Partial:
  """The exact D(x_hat [n, D], sigma scalar) -> [n, D] of ``mixture`` as a pytree (module docstring)."""
  k, d = mixture.num_components, mixture.dim
  if k > k_max:
    raise ValueError(f"k_max={k_max} is below the mixture's {k} components")
  pad = k_max - k
  log_w, means, eigvecs, eigvals = mixture.arrays
  arrays = (jnp.concatenate([log_w, jnp.full(pad, -1e4, jnp.float32)]),          # padded components: weight ~0
            jnp.concatenate([means, jnp.zeros((pad, d), jnp.float32)]),
            jnp.concatenate([eigvecs, jnp.broadcast_to(jnp.eye(d, dtype=jnp.float32), (pad, d, d))]),
            jnp.concatenate([eigvals, jnp.ones((pad, d), jnp.float32)]))
  return jax.tree_util.Partial(_denoise, arrays)
