"""Approximate posterior samples measured against the exact posterior of the Gaussian-mixture oracle.

For an inverse-problem sampler run on a ``GaussianMixture`` prior with observation y = A x + noise,
``GaussianMixture.posterior`` gives the exact ``MixturePosterior``; ``posterior_metrics`` scores a
sample [n, D] against it and ``posterior_floor`` gives the metrics' sampling-noise floor at the same n
(the 99% quantile over exact samples, as ``GaussianMixture.metric_floor`` does for the prior). Every
metric is an error, 0 is perfect, so a sampler is reported as metric / floor.

Coordinates whose exact std is <= ``PINNED_STD`` (observed exactly) are skipped by spread and
coverage; the tv reference is a large exact sample assigned by the same rule as the sample.
"""

from __future__ import annotations

import jax
import numpy as np

from data_lib.gmm import GaussianMixture, MixturePosterior

PINNED_STD = 1e-6
REFERENCE_SAMPLES = 100_000
REFERENCE_KEY = 24                                          # seed of the fixed exact reference sample


def _reference(posterior: MixturePosterior, prior: GaussianMixture) -> dict:
  """What the metrics compare with: exact mean, std, mode histogram and 5%/95% marginal quantiles."""
  std = posterior.std()
  free = std > PINNED_STD
  if not free.any():
    raise ValueError("posterior must leave at least one coordinate unpinned (exact std > 1e-6)")
  x = np.asarray(posterior.sample(jax.random.key(REFERENCE_KEY), REFERENCE_SAMPLES), np.float64)
  comp = np.asarray(prior.nearest_component(x.astype(np.float32)))
  return {"mean": posterior.mean(), "std": std, "free": free, "k": prior.num_components,
          "hist": np.bincount(comp, minlength=prior.num_components) / len(comp),
          "interval": np.quantile(x[:, free], [0.05, 0.95], axis=0)}          # [2, free]


def _metrics(x: np.ndarray, ref: dict, prior: GaussianMixture) -> dict[str, np.ndarray]:
  """The metrics of R samples at once: x [R, n, D] float64 -> each metric [R]."""
  r, n, d = x.shape
  finite = np.all(np.isfinite(x), axis=(1, 2))
  x = np.where(np.isfinite(x), x, 0.0)                     # rows with inf/NaN are reported as inf below
  comp = np.asarray(prior.nearest_component(x.reshape(-1, d).astype(np.float32))).reshape(r, n)
  counts = np.bincount((np.arange(r)[:, None] * ref["k"] + comp).ravel(), minlength=r * ref["k"]).reshape(r, -1)
  tv = 0.5 * np.abs(counts / n - ref["hist"]).sum(axis=1)
  mean_error = np.linalg.norm(x.mean(axis=1) - ref["mean"], axis=1) / np.sqrt(np.sum(ref["std"] ** 2))
  xf = x[:, :, ref["free"]]
  spread_error = np.max(np.abs(xf.std(axis=1, ddof=1) / ref["std"][ref["free"]] - 1), axis=1)
  lo, hi = ref["interval"]
  coverage = np.mean((xf >= lo) & (xf <= hi), axis=(1, 2))
  bad = np.where(finite, 0.0, np.inf)
  return {"tv": tv + bad, "mean_error": mean_error + bad, "spread_error": spread_error + bad,
          "coverage90": coverage, "coverage_error": np.abs(coverage - 0.9) + bad}


def posterior_metrics(x, posterior: MixturePosterior, prior: GaussianMixture) -> dict[str, float]:
  """How well a sample x [n, D] (n >= 2) reproduces the exact posterior.

  Returns (each an error, 0 is perfect, except coverage90):
    tv: total variation between the modes' sample frequencies and the exact posterior's, each point
      assigned to the prior's nearest mean (``GaussianMixture.nearest_component``); the exact side is
      the histogram of a fixed exact sample of 100k so both sides use the same rule.
    mean_error: ||sample mean - exact mean|| / sqrt(trace of the exact covariance).
    spread_error: max over unpinned coordinates of |sample std / exact std - 1|.
    coverage90: share of (sample, unpinned coordinate) pairs inside the exact central 90% marginal
      interval (5% and 95% quantiles of the exact sample); ideally 0.9.
    coverage_error: |coverage90 - 0.9|.
  A sample with a non-finite entry gets inf errors.

  Raises:
    ValueError: x not [n, D] with n >= 2; a posterior with every coordinate pinned.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] != posterior.dim:
    raise ValueError(f"x must have shape [n, {posterior.dim}] with n >= 2, got shape {x.shape}")
  values = _metrics(x[None], _reference(posterior, prior), prior)
  return {name: float(v[0]) for name, v in values.items()}


def posterior_floor(posterior: MixturePosterior, prior: GaussianMixture, n: int, key: jax.Array,
                    repeats: int = 200, quantile: float = 0.99) -> dict[str, float]:
  """The ``quantile`` of each error of ``posterior_metrics`` over ``repeats`` exact samples of size n:
  the sampling-noise floor (tv, mean_error, spread_error, coverage_error)."""
  x = np.asarray(posterior.sample(key, repeats * n), np.float64).reshape(repeats, n, posterior.dim)
  values = _metrics(x, _reference(posterior, prior), prior)
  return {name: float(np.quantile(values[name], quantile))
          for name in ("tv", "mean_error", "spread_error", "coverage_error")}
