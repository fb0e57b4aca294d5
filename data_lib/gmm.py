"""The Gaussian-mixture oracle: exact perturbed densities and scores under every linear SDE.

For data p_0 = sum_k w_k N(mu_k, Sigma_k) and a kernel x(t) | x(0) ~ N(a x(0), s^2 I),

    p_t(x) = sum_k w_k N(x; a mu_k, a^2 Sigma_k + s^2 I)                  (Gaussian convolution)

With Sigma_k = U_k diag(lambda_k) U_k^T, the covariance is U_k diag(a^2 lambda_k + s^2) U_k^T, so
with y_k = U_k^T (x - a mu_k) and r_k the posterior responsibility of component k:

    log p_t(x) = logsumexp_k [log w_k - 1/2 sum_j (y_kj^2 / v_kj + log(2 pi v_kj))],  v_kj = a^2 lambda_kj + s^2
    grad log p_t(x) = -sum_k r_k(x) U_k (y_k / v_k)

Use it to test losses (the minimiser is the exact score), samplers (driven by the exact score they
must reproduce the mixture) and likelihoods (the exact log p_eps).

Conditioning a mixture on a Gaussian observation gives a mixture again, so the oracle also answers
inverse problems exactly: ``condition`` (coordinates observed exactly, as in inpainting), ``observe``
(a noisy linear measurement y = A x + noise), ``posterior`` (the same for noise >= 0, as a
``MixturePosterior`` whose covariances may be singular) and ``restrict`` (a class made of some components),
plus ``class_log_likelihood(_t)``, the exact log p_t(class | x) whose gradient is the guidance term.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2 * np.pi))


def component_terms(arrays: tuple, x, a, s):
  """Per-component log densities [n, K] and whitened residuals y/v [n, K, D] of the mixture with ``arrays``
  (``GaussianMixture.arrays``) perturbed to sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I); x [n, D], a and s scalars
  or [n]."""
  log_w, means, eigvecs, eigvals = arrays
  x = jnp.asarray(x)
  a = jnp.broadcast_to(jnp.asarray(a, x.dtype), x.shape[:1])[:, None, None]
  s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])[:, None, None]
  diff = x[:, None, :] - a * means[None]                            # [n, K, D]
  y = jnp.einsum("nkd,kde->nke", diff, eigvecs)                      # U_k^T (x - a mu_k)
  v = jnp.square(a) * eigvals[None] + jnp.square(s)                  # [n, K, D]
  log_n = -0.5 * jnp.sum(jnp.square(y) / v + jnp.log(v) + _LOG_2PI, axis=-1)
  return log_w[None] + log_n, y / v


def perturbed_score(arrays: tuple, x, a, s) -> jax.Array:
  """grad_x log of the perturbed mixture (``component_terms``), in closed form: [n, D]."""
  log_joint, whitened = component_terms(arrays, x, a, s)
  resp = jax.nn.softmax(log_joint, axis=1)                          # r_k(x): [n, K]
  per_comp = jnp.einsum("nke,kde->nkd", whitened, arrays[2])        # U_k (y_k / v_k)
  return -jnp.einsum("nk,nkd->nd", resp, per_comp)


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
    # float64 copies for exact conditioning (``condition``, ``observe``, ``restrict``)
    self._weights64, self._means64, self._covs64 = w.copy(), mu.copy(), np.array(covs)
    self.weights = jnp.asarray(w, jnp.float32)
    self.means = jnp.asarray(mu, jnp.float32)
    self.covs = jnp.asarray(covs, jnp.float32)
    self._log_w = jnp.asarray(np.log(w), jnp.float32)
    self._eigvals = jnp.asarray(lam, jnp.float32)                    # [K, D]
    self._eigvecs = jnp.asarray(u, jnp.float32)                      # [K, D, D], columns
    self._chol = jnp.asarray(u * np.sqrt(lam)[:, None, :], jnp.float32)  # U sqrt(Lambda): [K, D, D]

  def __repr__(self):
    return f"GaussianMixture(K={self.num_components}, D={self.dim})"

  @property
  def arrays(self) -> tuple:
    """(log w [K], means [K, D], eigenvectors [K, D, D], eigenvalues [K, D]) of the covariances: the arrays
    ``component_terms`` and ``perturbed_score`` take (a pytree, so one compiled function serves any mixture
    of the same K and D)."""
    return self._log_w, self.means, self._eigvecs, self._eigvals

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
    return component_terms(self.arrays, x, a, s)

  def log_prob_perturbed(self, x: jax.Array, a, s) -> jax.Array:
    """log sum_k w_k N(x; a mu_k, a^2 Sigma_k + s^2 I) in nats: [n]. a, s: scalars or [n]."""
    log_joint, _ = self._component_terms(x, a, s)
    return jax.nn.logsumexp(log_joint, axis=1)

  def score_perturbed(self, x: jax.Array, a, s) -> jax.Array:
    """grad_x of ``log_prob_perturbed``, in closed form: [n, D]."""
    return perturbed_score(self.arrays, x, a, s)

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

  # ------------------------------------------------------------------ exact conditioning
  def condition(self, mask, values) -> GaussianMixture:
    """The exact posterior of the unobserved coordinates given x[mask] = values[mask].

    The posterior is a mixture over the unobserved coordinates only (kept in their original order),
    of dimension D - #observed: over all D coordinates it would be degenerate. Per component by
    Gaussian conditioning (Bishop, PRML eq. 2.81-2.82) and for the weights by Bayes' rule:

        w_k'     proportional to  w_k N(x_o; mu_k,o, Sigma_k,oo)
        mu_k'    = mu_k,u + Sigma_k,uo Sigma_k,oo^{-1} (x_o - mu_k,o)
        Sigma_k' = Sigma_k,uu - Sigma_k,uo Sigma_k,oo^{-1} Sigma_k,ou

    Computed in float64. Component k of the result is component k of ``self`` (a weight that
    underflows float64 is floored at the smallest normal float64), so class labels carry over.

    Arguments:
      mask: [D] bool or 0/1, True where the coordinate is observed; at least one coordinate must be
        observed and at least one not.
      values: [D]; only values[mask] is read, and must be finite.

    Returns:
      The posterior ``GaussianMixture`` with K components in D - sum(mask) dimensions.

    Raises:
      ValueError: a mask of the wrong shape, not boolean or 0/1, observing all or no coordinates;
        values of the wrong shape or not finite where observed.
    """
    m = np.asarray(mask)
    if m.shape != (self.dim,):
      raise ValueError(f"mask must have shape ({self.dim},), got shape {m.shape}")
    if m.dtype != bool:
      if not np.all((m == 0) | (m == 1)):
        raise ValueError(f"mask must be boolean or 0/1, got values {np.unique(m).tolist()}")
      m = m.astype(bool)
    if m.all() or not m.any():
      raise ValueError(f"mask must observe between 1 and D - 1 = {self.dim - 1} coordinates, got {int(m.sum())}")
    v = np.asarray(values, np.float64)
    if v.shape != (self.dim,):
      raise ValueError(f"values must have shape ({self.dim},), got shape {v.shape}")
    if not np.all(np.isfinite(v[m])):
      raise ValueError(f"values must be finite where mask is True, got {v[m].tolist()}")
    o, u = np.flatnonzero(m), np.flatnonzero(~m)
    mu, cov = self._means64, self._covs64
    s_oo, s_uo, s_uu = cov[:, o[:, None], o], cov[:, u[:, None], o], cov[:, u[:, None], u]
    gain = np.swapaxes(np.linalg.solve(s_oo, np.swapaxes(s_uo, 1, 2)), 1, 2)    # Sigma_uo Sigma_oo^{-1}: [K, U, O]
    means = mu[:, u] + np.einsum("kuo,ko->ku", gain, v[o] - mu[:, o])           # PRML eq. 2.81
    covs = s_uu - np.einsum("kuo,kvo->kuv", gain, s_uo)                         # PRML eq. 2.82
    log_w = np.log(self._weights64) + _log_normal64(v[o], mu[:, o], s_oo)       # Bayes' rule
    return GaussianMixture(_normalise_log_weights(log_w, "values"), means, _symmetrise(covs))

  def observe(self, A, y, noise_std) -> GaussianMixture:
    """The exact posterior p(x | y) for the linear observation y = A x + noise_std n, n ~ N(0, I_M).

    Per component (Bishop, PRML eq. 2.113-2.117, rewritten with the Kalman gain by the matrix
    inversion lemma, PRML eq. C.7) and for the weights by Bayes' rule:

        C_k      = A Sigma_k A^T + noise_std^2 I_M
        w_k'     proportional to  w_k N(y; A mu_k, C_k)            (PRML eq. 2.115)
        G_k      = Sigma_k A^T C_k^{-1}
        mu_k'    = mu_k + G_k (y - A mu_k)
        Sigma_k' = (I - G_k A) Sigma_k

    The covariance is evaluated in the equivalent Joseph form (I - G A) Sigma (I - G A)^T +
    noise_std^2 G G^T, which stays symmetric positive semi-definite under rounding. Computed in
    float64; component k of the result is component k of ``self``.

    noise_std = 0 is rejected: the observed directions are then pinned and every posterior
    covariance is singular, which a ``GaussianMixture`` cannot hold. To observe coordinates exactly
    use ``condition``, which returns the mixture over the remaining coordinates, or ``posterior``,
    whose ``MixturePosterior`` holds singular covariances.

    Arguments:
      A: [M, D] observation matrix.
      y: [M] observation.
      noise_std: scalar > 0, the standard deviation of the observation noise.

    Returns:
      The posterior ``GaussianMixture`` with K components in D dimensions.

    Raises:
      ValueError: A, y or noise_std of the wrong shape or not finite; noise_std <= 0; a noise_std so
        small that a posterior covariance is not positive definite in float64.
    """
    a_mat, y, noise = self._check_observation(A, y, noise_std, batched=False)
    if noise == 0:
      raise ValueError("noise_std = 0 gives a singular posterior covariance; use condition(mask, values) "
                       "to observe coordinates exactly, or posterior(A, y, 0)")
    log_w, means, covs = self._observe64(a_mat, y, noise)
    try:
      return GaussianMixture(_normalise_log_weights(log_w[0], "y"), means[0], covs)
    except ValueError as err:
      raise ValueError(f"noise_std = {float(noise):.3g} is too small for a positive definite posterior "
                       f"covariance in float64 ({err})") from None

  def posterior(self, A, y, noise_std) -> MixturePosterior | list[MixturePosterior]:
    """The exact posterior p(x | y) for y = A x + noise_std n, n ~ N(0, I_M), noise_std >= 0 included.

    The same Kalman-gain / Joseph-form update as ``observe`` (PRML eq. 2.113-2.117, C.7), returned as a
    ``MixturePosterior`` whose covariances may be singular: with noise_std = 0 the Joseph form reduces
    to (I - G_k A) Sigma_k (I - G_k A)^T, which annihilates A^T (A Sigma_k' = 0), so every posterior
    draw satisfies A x = y: the observed directions are pinned. That needs C_k = A Sigma_k A^T
    invertible, i.e. A of full row rank M <= D. A row of A with one nonzero entry A_ij then pins
    coordinate j: its mean is set to y_i / A_ij and its variances to 0 exactly (instead of to within
    rounding), so samples reproduce such an observation exactly (inpainting). Computed in float64;
    component k of the result is component k of ``self``.

    Arguments:
      A: [M, D] observation matrix; of full row rank when noise_std = 0.
      y: [M] one observation, or [N, M] N observations of the same A and noise_std.
      noise_std: finite scalar >= 0.

    Returns:
      For y [M] one ``MixturePosterior``; for y [N, M] a list of N of them, the i-th given y[i]
      (covariances and gains are shared, so a batch costs little more than one).

    Raises:
      ValueError: A, y or noise_std of the wrong shape or not finite; noise_std < 0; noise_std = 0 with
        A not of full row rank.
    """
    a_mat, y64, noise = self._check_observation(A, y, noise_std, batched=True)
    if noise == 0 and np.linalg.matrix_rank(a_mat) < a_mat.shape[0]:
      raise ValueError(f"A must have full row rank when noise_std = 0 (rank {np.linalg.matrix_rank(a_mat)} < "
                       f"M = {a_mat.shape[0]}): drop dependent rows or use a tiny noise_std such as 1e-6")
    log_w, means, covs = self._observe64(a_mat, y64, noise)
    if noise == 0:   # a row observing one coordinate pins it: its exact value and zero variance replace the rounded ones
      for i in np.flatnonzero(np.count_nonzero(a_mat, axis=1) == 1):
        j = np.flatnonzero(a_mat[i])[0]
        means[:, :, j] = (y64[:, i] / a_mat[i, j])[:, None]
        covs[:, j, :] = covs[:, :, j] = 0.0
    posts = [MixturePosterior(_normalise_log_weights(lw, "y"), mu, covs) for lw, mu in zip(log_w, means)]
    return posts if np.ndim(y) == 2 else posts[0]

  def _check_observation(self, A, y, noise_std, batched: bool):
    """Validated float64 A [M, D], y [N, M] (y [M] as N = 1; [N, M] only if ``batched``), noise_std >= 0."""
    a_mat = np.asarray(A, np.float64)
    if a_mat.ndim != 2 or a_mat.shape[0] < 1 or a_mat.shape[1] != self.dim:
      raise ValueError(f"A must have shape [M, {self.dim}] with M >= 1, got shape {a_mat.shape}")
    if not np.all(np.isfinite(a_mat)):
      raise ValueError("A must be finite")
    y = np.asarray(y, np.float64)
    m = a_mat.shape[0]
    if (y.shape[-1:] != (m,) or y.ndim > 1 + batched) or not np.all(np.isfinite(y)):
      want = f"({m},) or [N, {m}]" if batched else f"({m},)"
      raise ValueError(f"y must be finite with shape {want}, got shape {y.shape}")
    noise = np.asarray(noise_std, np.float64)
    if noise.ndim != 0 or not np.isfinite(noise) or noise < 0:
      raise ValueError(f"noise_std must be a finite scalar >= 0, got {noise_std!r}")
    return a_mat, y.reshape(-1, m), float(noise)

  def _observe64(self, a_mat, y, noise):
    """The update of ``observe`` for y [N, M]: log weights [N, K] (unnormalised), means [N, K, D], covs [K, D, D]."""
    mu, cov, m = self._means64, self._covs64, a_mat.shape[0]
    a_cov = np.einsum("md,kde->kme", a_mat, cov)                                # A Sigma_k: [K, M, D]
    c = np.einsum("kme,ne->kmn", a_cov, a_mat) + noise**2 * np.eye(m)           # C_k: [K, M, M]
    gain = np.swapaxes(np.linalg.solve(c, a_cov), 1, 2)                         # G_k = (C_k^{-1} A Sigma_k)^T: [K, D, M]
    pred = mu @ a_mat.T                                                         # A mu_k: [K, M]
    means = mu + np.einsum("kdm,nkm->nkd", gain, y[:, None] - pred)
    i_ga = np.eye(self.dim) - np.einsum("kdm,me->kde", gain, a_mat)             # I - G_k A
    covs = (np.einsum("kde,kef,kgf->kdg", i_ga, cov, i_ga)                      # Joseph form
            + noise**2 * np.einsum("kdm,kem->kde", gain, gain))
    log_w = np.log(self._weights64) + np.stack([_log_normal64(yi, pred, c) for yi in y])  # PRML eq. 2.115, Bayes' rule
    return log_w, means, _symmetrise(covs)

  def restrict(self, components) -> GaussianMixture:
    """The mixture of the listed components with renormalised weights, p(x | k in components).

    When components are labelled by class this is the class-conditional density p(x | class):
    w_k' = w_k / sum_{j in components} w_j (Bayes' rule). Component i of the result is
    components[i] of ``self``.

    Arguments:
      components: non-empty sequence of distinct component indices in [0, K).

    Raises:
      ValueError: components empty, not integers, out of range or repeated.
    """
    idx = self._check_components(components)
    w = self._weights64[idx]
    return GaussianMixture(w / w.sum(), self._means64[idx], self._covs64[idx])

  def class_log_likelihood(self, x: jax.Array, a, s, components) -> jax.Array:
    """Exact log p(class | x) at perturbation (a, s), the class being the set ``components``: [n].

    By Bayes' rule, log p(c | x) = logsumexp_{k in c} [log w_k + log N(x; a mu_k, a^2 Sigma_k + s^2 I)]
    - log p_(a,s)(x). Differentiable in x: ``jax.grad`` of it is the exact classifier-guidance term
    grad_x log p_t(y | x) (Song et al. 2021, eq. 14 / Dhariwal & Nichol 2021). ``components`` must be
    concrete (it is validated on the host), x: [n, D], a, s: scalars or [n].

    Raises:
      ValueError: components empty, not integers, out of range or repeated.
    """
    idx = jnp.asarray(self._check_components(components))
    log_joint, _ = self._component_terms(x, a, s)                      # [n, K]
    return jax.nn.logsumexp(log_joint[:, idx], axis=1) - jax.nn.logsumexp(log_joint, axis=1)

  def class_log_likelihood_t(self, x: jax.Array, t: jax.Array, sde, components) -> jax.Array:
    """Exact log p_t(class | x) of the data perturbed by ``sde`` to times t ([n]): [n] (see ``class_log_likelihood``)."""
    a, s = sde.marginal_coefs(jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1]))
    return self.class_log_likelihood(x, a, s, components)

  def _check_components(self, components) -> np.ndarray:
    """Validated component indices: [C] int."""
    idx = np.asarray(components)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"components must be a non-empty sequence of integer indices, got {components!r}")
    if np.any(idx < 0) or np.any(idx >= self.num_components):
      raise ValueError(f"components must lie in [0, {self.num_components}), got {idx.tolist()}")
    if len(np.unique(idx)) != len(idx):
      raise ValueError(f"components must not repeat, got {idx.tolist()}")
    return idx

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

  def spread_bias(self, x, ref) -> float:
    """Worst |std(x) / std(ref) - 1| over modes (each row assigned to its nearest mean) and coordinates:
    the spread error of a sample [n, D] against a reference solve of the same prior draws [n, D], where
    most sampling noise cancels."""
    cx, cr = np.asarray(self.nearest_component(jnp.asarray(x))), np.asarray(self.nearest_component(jnp.asarray(ref)))
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return max(float(np.max(np.abs(x[cx == k].std(0) / ref[cr == k].std(0) - 1))) for k in range(self.num_components))

  def metric_floor(self, key: jax.Array, n: int, repeats: int = 200, quantile: float = 0.99) -> dict[str, float]:
    """The ``quantile`` of ``mode_metrics`` over ``repeats`` exact samples of size n: the noise floor."""
    values = [self.mode_metrics(self.sample(k, n)) for k in jax.random.split(key, repeats)]
    return {name: float(np.quantile([v[name] for v in values], quantile)) for name in values[0]}


@dataclasses.dataclass(frozen=True, eq=False)
class MixturePosterior:
  """A mixture sum_k w_k N(mu_k, Sigma_k) whose covariances may be singular: the exact posterior of
  ``GaussianMixture.posterior`` (with noise_std = 0 the observed directions have zero variance).

  Fields (float64 numpy): weights [K] summing to 1, means [K, D], covs [K, D, D] symmetric positive
  semi-definite. Built by ``GaussianMixture.posterior``; constructing one directly (e.g. a posterior
  with a mode dropped, as a deliberately wrong reference) does no validation.
  """

  weights: np.ndarray
  means: np.ndarray
  covs: np.ndarray

  def __post_init__(self):
    # Square root Sigma_k = R_k R_k^T with R_k = U_k sqrt(Lambda_k) from eigh; eigenvalues below the
    # rounding level D eps max(Lambda_k) (pinned directions, which rounding leaves at tiny values of
    # either sign) are set to 0.
    lam, u = np.linalg.eigh(self.covs)
    tol = self.covs.shape[-1] * np.finfo(np.float64).eps * lam.max(axis=1, keepdims=True)
    sqrt = u * np.sqrt(np.where(lam > tol, lam, 0.0))[:, None, :]
    sqrt[np.diagonal(self.covs, axis1=1, axis2=2) == 0] = 0.0          # a zero variance is exactly zero noise
    object.__setattr__(self, "_sqrt", sqrt)

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """n exact samples: [n, D] float32 (computed in float64)."""
    return self.sample_with_components(key, n)[0]

  def sample_with_components(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """n exact samples [n, D] float32 and the index of the component each came from, [n] int32."""
    k_key, z_key = jax.random.split(key)
    comp = np.asarray(jax.random.categorical(k_key, jnp.asarray(np.log(self.weights), jnp.float32), shape=(n,)))
    z = np.asarray(jax.random.normal(z_key, (n, self.dim)), np.float64)
    x = np.empty((n, self.dim))
    for k in np.unique(comp):                                          # per component: no [n, D, D] gather
      x[comp == k] = self.means[k] + z[comp == k] @ self._sqrt[k].T
    return jnp.asarray(x, jnp.float32), jnp.asarray(comp, jnp.int32)

  def mean(self) -> np.ndarray:
    """The mixture mean sum_k w_k mu_k: [D]."""
    return self.weights @ self.means

  def cov(self) -> np.ndarray:
    """The mixture covariance sum_k w_k (Sigma_k + mu_k mu_k^T) - mean mean^T (law of total variance): [D, D]."""
    mean = self.mean()
    second = np.einsum("k,kde->de", self.weights, self.covs + np.einsum("kd,ke->kde", self.means, self.means))
    return second - np.outer(mean, mean)

  def std(self) -> np.ndarray:
    """The marginal standard deviation of each coordinate: [D] (0 where pinned, up to rounding)."""
    return np.sqrt(np.maximum(np.diag(self.cov()), 0.0))


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


def _log_normal64(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
  """log N(x; means_k, covs_k) in float64 through a Cholesky factor: x [M], means [K, M], covs [K, M, M] -> [K]."""
  chol = np.linalg.cholesky(covs)                                      # covs_k = L_k L_k^T
  z = np.linalg.solve(chol, (x - means)[..., None])[..., 0]            # L_k^{-1} (x - mu_k)
  log_det = 2 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
  return -0.5 * (np.sum(z**2, axis=1) + log_det + means.shape[1] * _LOG_2PI)


def _normalise_log_weights(log_w: np.ndarray, name: str) -> np.ndarray:
  """exp(log_w) / sum exp(log_w), floored at the smallest normal float64 so every weight stays > 0: [K]."""
  if not np.isfinite(log_w.max()):
    raise ValueError(f"{name} has zero density under every component in float64")
  w = np.exp(log_w - log_w.max())
  return np.maximum(w / w.sum(), np.finfo(np.float64).tiny)


def _symmetrise(covs: np.ndarray) -> np.ndarray:
  """(C + C^T) / 2 for a stack [K, D, D], removing rounding asymmetry."""
  return 0.5 * (covs + np.swapaxes(covs, 1, 2))
