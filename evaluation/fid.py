"""FID and KID from feature vectors (Heusel et al. 2017; Binkowski et al. 2018)."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [F] and covariance [F, F] (unbiased) of features [N, F], in float64."""
  f = np.asarray(features, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Frechet distance of two Gaussians (FID)."""
  covmean = linalg.sqrtm(np.asarray(sigma1) @ np.asarray(sigma2))
  if not np.all(np.isfinite(covmean)):                       # singular product: regularise as TTUR's code
    eye = np.eye(len(mu1)) * 1e-6
    covmean = linalg.sqrtm((sigma1 + eye) @ (sigma2 + eye))
  covmean = np.real(covmean)
  diff = np.asarray(mu1) - np.asarray(mu2)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kernel_distance(f1: np.ndarray, f2: np.ndarray) -> float:
  """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / F + 1)^3 (KID)."""
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  d = f1.shape[1]
  k = lambda a, b: (a @ b.T / d + 1.0) ** 3
  k11, k22, k12 = k(f1, f1), k(f2, f2), k(f1, f2)
  m, n = len(f1), len(f2)
  return float((k11.sum() - np.trace(k11)) / (m * (m - 1)) + (k22.sum() - np.trace(k22)) / (n * (n - 1))
               - 2 * k12.mean())
