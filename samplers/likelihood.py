"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, App. D.2; seed 004).

The instantaneous change of variables (Chen et al. 2018, Thm. 1) along dx/dt = f~(x, t) gives
    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt,
with f~ = f - g^2 score / 2. The augmented state [x, int div] is integrated from eps to T by the
same diffrax path as the ODE sampler (``samplers.ode.solve``), and p_T is replaced by the prior.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from samplers import common
from samplers.ode import check_solver_options, solve
from sde_lib import SDE, ScoreFn

DIVERGENCES = ("hutchinson_rademacher", "hutchinson_gaussian", "exact")


def _flat(v):
  return v.reshape(v.shape[0], -1)


def drift_and_divergence(drift_fn, x, probes, divergence):
  """(f~(x), div f~(x)) for a batch: f~ like x, div [B].

  ``exact``: the trace of the per-sample Jacobian from D JVPs against the basis vectors
  (vmapped: one batched evaluation of D tangents). Hutchinson (Hutchinson 1989; Grathwohl et al.
  2019): div ~ mean_p v_p^T (df~/dx) v_p, from one VJP per probe.
  """
  if divergence == "exact":
    d = math.prod(x.shape[1:])
    basis = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:])

    def jvp_column(e):
      return jax.jvp(drift_fn, (x,), (jnp.broadcast_to(e, x.shape),))[1]

    drift = drift_fn(x)
    cols = jax.vmap(jvp_column)(basis)                                   # [D, B, ...]
    diag = jnp.einsum("dbd->bd", cols.reshape((d, x.shape[0], d)))
    return drift, jnp.sum(diag, axis=1)
  drift, vjp_fn = jax.vjp(drift_fn, x)
  est = jax.vmap(lambda v: jnp.sum(_flat(vjp_fn(v)[0]) * _flat(v), axis=1))(probes)   # [P, B]
  return drift, jnp.mean(est, axis=0)


def get_likelihood_fn(sde: SDE, *, rtol: float = 1e-5, atol: float = 1e-5, t_min: float = 1e-5,
                      divergence: str = "hutchinson_rademacher", n_probes: int = 1, solver: str = "tsit5",
                      num_steps: int | None = None, max_steps: int = 4096, per_sample: bool = False,
                      eps: float | None = None, adjoint: str = "recursive_checkpoint"):
  """Builds ``likelihood_fn(key, score_fn, x) -> (logp [B], z [B, ...], nfe)``.

  logp is log p_{t_min}(x) in nats of the data as given (no dequantisation, no rescaling: see
  ``bits_per_dim``), z = x(T) the latent. nfe counts evaluations of the augmented vector field;
  each is one evaluation of score_fn with its derivative: ``n_probes`` VJPs (Hutchinson) or D JVPs
  (exact).

  Batches: an adaptive solver integrates the batch jointly -- one step-size sequence, chosen for
  the worst sample -- so every sample meets the tolerance, some with more steps than needed,
  and a sample's value changes (within tolerance) with its batch-mates. ``per_sample=True``
  vmaps the solve over samples: each gets its own steps and the result does not depend on the
  batch (nfe is then [B]).

  Arguments:
    divergence: ``"hutchinson_rademacher"``, ``"hutchinson_gaussian"`` (unbiased estimates with
      ``n_probes`` probes, held fixed along the trajectory) or ``"exact"`` (low-dimensional data).
    rtol: as in ``samplers.ode.solve``.
    atol: as in ``samplers.ode.solve``.
    solver: as in ``samplers.ode.solve``.
    num_steps: as in ``samplers.ode.solve``.
    max_steps: as in ``samplers.ode.solve``.
    t_min: the time the data sits at, in (0, T) (``eps``, score_sde's name, is accepted too).
    adjoint: how ``jax.grad`` of logp with respect to x or the score's parameters goes through the
      solve, a name in ``samplers.ode.ADJOINTS`` (see ``samplers.ode.solve``). With a Hutchinson
      divergence the probes are fixed by ``key``, so logp is a smooth function of x and the parameters.

  Raises:
    ValueError: an unknown divergence, solver or adjoint, n_probes < 1, bad tolerances; at call time,
      x without a batch axis.
  """
  common.check_choice("divergence", divergence, DIVERGENCES)
  common.check_steps("n_probes", n_probes)
  check_solver_options(solver, rtol, atol, num_steps, max_steps, adjoint)
  t_min = common.check_t_min(sde, t_min if eps is None else eps)

  def integrate(score_fn, x, probes):
    rsde = sde.reverse(score_fn, probability_flow=True)
    batch = x.shape[0]

    def vector_field(t, state):
      y, _ = state
      drift_fn = lambda v: rsde.sde(v, common.full_time(t, batch))[0]
      return drift_and_divergence(drift_fn, y, probes, divergence)

    (z, delta), nfe = solve(vector_field, (x, jnp.zeros(batch)), t_min, sde.t_end, solver=solver, rtol=rtol,
                            atol=atol, num_steps=num_steps, max_steps=max_steps, adjoint=adjoint)
    return sde.prior_logp(z) + delta, z, nfe

  def likelihood_fn(key: jax.Array, score_fn: ScoreFn, x: jax.Array):
    if x.ndim < 2:
      raise ValueError(f"x must be [batch, *data_dims], got shape {x.shape}")
    keys = common.per_sample_keys(key, x.shape[0])
    shape = (n_probes,) + x.shape[1:]
    if divergence == "hutchinson_rademacher":
      probes = jax.vmap(lambda k: jax.random.rademacher(k, shape, dtype=x.dtype))(keys)
    else:
      probes = jax.vmap(lambda k: jax.random.normal(k, shape, dtype=x.dtype))(keys)
    probes = jnp.swapaxes(probes, 0, 1)                                    # [P, B, ...]
    if not per_sample:
      return integrate(score_fn, x, probes)
    def one(xi, pi):
      logp, z, nfe = integrate(score_fn, xi[None], pi[:, None])
      return logp[0], z[0], nfe

    return jax.vmap(one, in_axes=(0, 1))(x, probes)

  return likelihood_fn


def dequantize(key: jax.Array, pixels: jax.Array, *, data_range: tuple[float, float] = (0.0, 1.0),
               n_bits: int = 8) -> jax.Array:
  """Uniformly dequantised data: x = lo + (hi - lo) (k + u) / 2^n_bits, u ~ U[0, 1), k integer pixels.

  On [0, 1] data given as k/255 this is score_sde's (255 x + u)/256.
  """
  lo, hi = data_range
  u = jax.random.uniform(key, pixels.shape)
  return lo + (hi - lo) * (jnp.asarray(pixels, jnp.float32) + u) / 2**n_bits


def bits_per_dim(logp: jax.Array, dims: int, *, data_range: tuple[float, float] = (0.0, 1.0),
                 n_bits: int = 8) -> jax.Array:
  """Bits per dimension of n_bits-bit data from the log-density of its dequantised version.

  Derivation. Pixels k in {0, ..., 2^n - 1}^D are dequantised to y = (k + u)/2^n in [0, 1)^D, and the
  model sees x = lo + (hi - lo) y (``data_range``; e.g. (-1, 1) for centred data). Then
    log p_y(y) = log p_x(x) + D log(hi - lo)                  (change of variables, Jacobian (hi - lo)^D)
    log P(k) >= E_u[log p_y((k + u)/2^n)] - D n log 2         (Theis et al. 2016; a bin has volume 2^{-nD})
  so bits/dim = -(log p_x + D log(hi - lo)) / (D log 2) + n, an upper bound on the discrete model's
  bits/dim. Forgetting the log(hi - lo) term shifts [-1, 1] results by 1 bit; forgetting the +n, or
  dequantising to [0, 256) instead, gives negative or shifted numbers.

  Arguments:
    logp: [B] log p_x(x) in nats of the dequantised data as the model saw it.
    dims: D, the number of data dimensions (e.g. 32*32*3).
    data_range: (lo, hi), the interval [0, 1) was mapped to.
    n_bits: bits per sample of the raw data.

  Returns: [B] bits per dimension.
  """
  lo, hi = data_range
  if not hi > lo:
    raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range!r}")
  log_py = logp + dims * math.log(hi - lo)
  return -log_py / (dims * math.log(2.0)) + n_bits
