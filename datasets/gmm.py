"""The Gaussian-mixture oracle: exact perturbed densities and scores under every linear SDE.

For data p_0 = sum_k w_k N(mu_k, Sigma_k) and a kernel x(t) | x(0) ~ N(a x(0), s^2 I),

    p_t(x) = sum_k w_k N(x; a mu_k, a^2 Sigma_k + s^2 I)                  (Gaussian convolution)

With Sigma_k = U_k diag(lambda_k) U_k^T, the covariance is U_k diag(a^2 lambda_k + s^2) U_k^T, so
with y_k = U_k^T (x - a mu_k) and r_k the posterior responsibility of component k:

    log p_t(x) = logsumexp_k [log w_k - 1/2 sum_j (y_kj^2 / v_kj + log(2 pi v_kj))],  v_kj = a^2 lambda_kj + s^2
    grad log p_t(x) = -sum_k r_k(x) U_k (y_k / v_k)

Use it to test losses (the minimiser is the exact score), samplers (driven by the exact score they
must reproduce the mixture) and likelihoods (the exact log p_eps).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2 * np.pi))


class GaussianMixture:
  """A mixture sum_k w_k N(mu_k, Sigma_k) in D dimensions.

  Arguments:
    weights: [K] positive, summing to 1 (to within 1e-6).
    means: [K, D].
    covs: [K, D, D] symmetric positive definite, or [K, D] diagonal variances, or None for identity.

  Raises:
    ValueError: shapes that disagree, weights that are not a distribution, covariances that are not
      symmetric positive definite.
  """

  def __init__(self, weights, means, covs=None):
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    if w.ndim != 1 or mu.ndim != 2 or mu.shape[0] != w.shape[0]:
      raise ValueError(f"weights must be [K] and means [K, D], got shapes {w.shape} and {mu.shape}")
    if np.any(w <= 0) or abs(w.sum() - 1) > 1e-6:
      raise ValueError(f"weights must be positive and sum to 1, got {w.tolist()}")
    k, d = mu.shape
    if covs is None:
      covs = np.broadcast_to(np.eye(d), (k, d, d))
    covs = np.asarray(covs, np.float64)
    if covs.shape == (k, d):
      covs = np.einsum("kd,de->kde", covs, np.eye(d))
    if covs.shape != (k, d, d):
      raise ValueError(f"covs must be [K, D, D] or [K, D] with K={k}, D={d}, got shape {covs.shape}")
    if not np.allclose(covs, np.swapaxes(covs, 1, 2)):
      raise ValueError("covs must be symmetric")
    lam, u = np.linalg.eigh(covs)
    if np.any(lam <= 0):
      raise ValueError(f"covs must be positive definite, got eigenvalues down to {lam.min():.3g}")
    self.num_components, self.dim = k, d
    self.weights = jnp.asarray(w, jnp.float32)
    self.means = jnp.asarray(mu, jnp.float32)
    self.covs = jnp.asarray(covs, jnp.float32)
    self._log_w = jnp.asarray(np.log(w), jnp.float32)
    self._eigvals = jnp.asarray(lam, jnp.float32)                    # [K, D]
    self._eigvecs = jnp.asarray(u, jnp.float32)                      # [K, D, D], columns
    self._chol = jnp.asarray(u * np.sqrt(lam)[:, None, :], jnp.float32)  # U sqrt(Lambda): [K, D, D]

  def __repr__(self):
    return f"GaussianMixture(K={self.num_components}, D={self.dim})"

  # ------------------------------------------------------------------------------ sampling
  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """n exact samples of p_0: [n, D]."""
    return self.sample_with_components(key, n)[0]

  def sample_with_components(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """n exact samples [n, D] and the index of the component each came from, [n] int32."""
    k_key, z_key = jax.random.split(key)
    comp = jax.random.categorical(k_key, self._log_w, shape=(n,))
    z = jax.random.normal(z_key, (n, self.dim))
    return self.means[comp] + jnp.einsum("nde,ne->nd", self._chol[comp], z), comp

  def sample_t(self, key: jax.Array, n: int, t, sde) -> jax.Array:
    """n exact samples of the perturbed marginal p_t of ``sde`` (t scalar or [n]): [n, D]."""
    x_key, z_key = jax.random.split(key)
    a, s = sde.marginal_coefs(jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,)))
    return a[:, None] * self.sample(x_key, n) + s[:, None] * jax.random.normal(z_key, (n, self.dim))

  # ---------------------------------------------------------------- densities at (a, s)
  def _component_terms(self, x, a, s):
    """Per-component log densities [n, K] and whitened residuals y/v [n, K, D]."""
    x = jnp.asarray(x)
    a = jnp.broadcast_to(jnp.asarray(a, x.dtype), x.shape[:1])[:, None, None]
    s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])[:, None, None]
    diff = x[:, None, :] - a * self.means[None]                      # [n, K, D]
    y = jnp.einsum("nkd,kde->nke", diff, self._eigvecs)              # U_k^T (x - a mu_k)
    v = jnp.square(a) * self._eigvals[None] + jnp.square(s)          # [n, K, D]
    log_n = -0.5 * jnp.sum(jnp.square(y) / v + jnp.log(v) + _LOG_2PI, axis=-1)
    return self._log_w[None] + log_n, y / v

  def log_prob_perturbed(self, x: jax.Array, a, s) -> jax.Array:
    """log sum_k w_k N(x; a mu_k, a^2 Sigma_k + s^2 I) in nats: [n]. a, s: scalars or [n]."""
    log_joint, _ = self._component_terms(x, a, s)
    return jax.nn.logsumexp(log_joint, axis=1)

  def score_perturbed(self, x: jax.Array, a, s) -> jax.Array:
    """grad_x of ``log_prob_perturbed``, in closed form: [n, D]."""
    log_joint, whitened = self._component_terms(x, a, s)
    resp = jax.nn.softmax(log_joint, axis=1)                          # r_k(x): [n, K]
    per_comp = jnp.einsum("nke,kde->nkd", whitened, self._eigvecs)    # U_k (y_k / v_k)
    return -jnp.einsum("nk,nkd->nd", resp, per_comp)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """log p_0(x) in nats: [n]."""
    return self.log_prob_perturbed(x, 1.0, 0.0)

  # ------------------------------------------------------------------- densities under an SDE
  def log_prob_t(self, x: jax.Array, t: jax.Array, sde) -> jax.Array:
    """Exact log p_t(x) of the data perturbed by ``sde`` to times t ([n]): [n] nats."""
    a, s = sde.marginal_coefs(jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1]))
    return self.log_prob_perturbed(x, a, s)

  def score_t(self, x: jax.Array, t: jax.Array, sde) -> jax.Array:
    """Exact score grad_x log p_t(x) of the perturbed data: [n, D]."""
    a, s = sde.marginal_coefs(jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1]))
    return self.score_perturbed(x, a, s)

  def score_fn(self, sde, discrete: bool = False) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact ``score_fn(x, t)`` of the SDE's marginals (or, if ``discrete``, of its ladder levels)."""
    coefs = sde.discrete_marginal if discrete else sde.marginal_coefs

    def score_fn(x, t):
      a, s = coefs(jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1]))
      return self.score_perturbed(x, a, s)

    return score_fn

  # -------------------------------------------------------------------- sample diagnostics
  def nearest_component(self, x: jax.Array) -> jax.Array:
    """Index of the mean nearest to each row of x (Euclidean): [n] int32."""
    d2 = jnp.sum(jnp.square(x[:, None, :] - self.means[None]), axis=-1)
    return jnp.argmin(d2, axis=1)

  def mode_metrics(self, x) -> dict[str, float]:
    """How well a sample [n, D] reproduces the mixture, each mode found by nearest mean.

    Returns:
      tv: total variation between the modes' sample frequencies and the weights.
      mean_err: max over modes and coordinates of |sample mean - mu| / mode std.
      std_err: max over modes and coordinates of |sample std / mode std - 1|.
      Both are NaN-free only if every mode received at least two samples (else inf).
    """
    x = np.asarray(x, np.float64)
    comp = np.asarray(self.nearest_component(jnp.asarray(x, jnp.float32)))
    freq = np.bincount(comp, minlength=self.num_components) / len(comp)
    tv = 0.5 * float(np.abs(freq - np.asarray(self.weights, np.float64)).sum())
    mean_err = std_err = 0.0
    for k in range(self.num_components):
      xk = x[comp == k]
      if len(xk) < 2 or not np.all(np.isfinite(xk)):
        return {"tv": tv, "mean_err": float("inf"), "std_err": float("inf")}
      sd = np.sqrt(np.diag(np.asarray(self.covs[k], np.float64)))
      mean_err = max(mean_err, float(np.max(np.abs(xk.mean(0) - np.asarray(self.means[k])) / sd)))
      std_err = max(std_err, float(np.max(np.abs(xk.std(0, ddof=1) / sd - 1))))
    return {"tv": tv, "mean_err": mean_err, "std_err": std_err}

  def metric_floor(self, key: jax.Array, n: int, repeats: int = 200, quantile: float = 0.99) -> dict[str, float]:
    """The ``quantile`` of ``mode_metrics`` over ``repeats`` exact samples of size n: the noise floor."""
    values = [self.mode_metrics(self.sample(k, n)) for k in jax.random.split(key, repeats)]
    return {name: float(np.quantile([v[name] for v in values], quantile)) for name in values[0]}


def example_mixture(dim: int = 2) -> GaussianMixture:
  """The project's test mixture: four well-separated modes with unequal weights 0.5/0.25/0.15/0.10.

  Means at (+-4, +-4) in the first two coordinates (zero elsewhere), different spreads per mode, one
  of them correlated in the first two coordinates. ``dim`` >= 2.
  """
  if dim < 2:
    raise ValueError(f"dim must be >= 2, got {dim}")
  means = np.zeros((4, dim))
  means[:, :2] = [[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0]]
  stds = np.array([0.5, 0.3, 0.7, 0.4])
  covs = np.stack([np.eye(dim) * sd**2 for sd in stds])
  covs[3, 0, 1] = covs[3, 1, 0] = 0.6 * stds[3] ** 2                 # a correlated mode
  return GaussianMixture([0.5, 0.25, 0.15, 0.10], means, covs)
