"""Turning a network into a score function ``score_fn(x, t)``: the parameterisations.

``"reference"`` is score_sde's (``models/utils.py``): on VP and sub-VP the network predicts the noise
and score = -output / s(t); on VE it predicts the score, divided by sigma when ``scale_by_sigma``
(score_sde divides inside the network; here the network stays SDE-agnostic and the division is
done below -- the same function). ``"epsilon"`` takes that noise prediction on every SDE.
``"edm"`` is Karras et al.'s preconditioning (2022, Table 1) in the scaled variable x / a(t).
``"velocity"``: the network predicts v = a'(t) x(0) + s'(t) z, the probability-flow drift (flow matching; the
conversion is ``sde_lib.parameterization.score_from_velocity``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sde_lib import SDE, batch_broadcast
from sde_lib.parameterization import score_from_velocity

# score_sde's continuous VP labels: t in [0, 1] stretched to DDPM's 1000-step range [0, 999].
VP_CONTINUOUS_LABEL_SCALE = 999.0
PARAMETERIZATIONS = ("reference", "epsilon", "edm", "velocity")


def noise_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
  """The label a network is conditioned on at time t ([B] -> [B]); score_sde's ``get_score_fn``
  conventions, so that its published models load as they are (score_sde_pytorch models/utils.py).

  Continuous: sigma(t) on VE (embedded as log sigma by Fourier features), 999 t otherwise.
  Discrete VE: the ladder index counted from sigma_max, round((T - t)(N - 1) / T) (index 0 is the
  largest noise level). Discrete VP / sub-VP: t (N - 1) / T, not rounded (the positional embedding
  takes it as is; its noise scale is that of ``discrete_level``).
  """
  if continuous:
    return sde.sigma(t) if sde.variance_exploding else VP_CONTINUOUS_LABEL_SCALE * t
  if sde.variance_exploding:
    return jnp.round((sde.T - t) * (sde.N - 1) / sde.T)
  return t * (sde.N - 1) / sde.T


# Float slack of the discrete level: t_i (N - 1) / T may land just below i in float32.
_LEVEL_SLACK = 1e-4


def discrete_coefs(sde: SDE, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(a_i, s_i) of the ladder level a discrete network's output is scaled with at time t, each [B].

  VE: the nearest level (score_sde indexes sigmas at the rounded label). VP / sub-VP: level
  floor(t (N - 1) / T), as score_sde's ``labels.long()``; both agree on the ladder's own times.
  """
  if sde.variance_exploding:
    return sde.discrete_marginal(t)
  a, s = sde.discrete_coefs()
  i = jnp.clip(jnp.floor(t * (sde.N - 1) / sde.T + _LEVEL_SLACK).astype(jnp.int32), 0, sde.N - 1)
  return jnp.asarray(a, jnp.float32)[i], jnp.asarray(s, jnp.float32)[i]


def get_score_fn(sde: SDE, apply_fn: Callable, params, *, continuous: bool = True,
                 parameterization: str = "reference", scale_by_sigma: bool = False, sigma_data: float = 0.5,
                 train: bool = False, rngs=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A ``score_fn(x [B, ...], t [B]) -> [B, ...]`` from ``apply_fn(params, x, labels, train, rngs)``.

  Arguments:
    continuous: labels and noise scales from the continuous SDE (else from its N-level ladder).
    parameterization: one of ``PARAMETERIZATIONS`` (see the module docstring).
    scale_by_sigma: (reference, VE) divide the network output by the noise level.
    sigma_data: (edm) the data standard deviation of the preconditioning.
    train: passed to apply_fn (dropout during training).
    rngs: passed to apply_fn (dropout's keys).

  Raises:
    ValueError: an unknown parameterization; "velocity" with continuous=False.
  """
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(f"parameterization must be one of {list(PARAMETERIZATIONS)}, got {parameterization!r}")
  if parameterization == "velocity" and not continuous:
    raise ValueError("parameterization 'velocity' needs a continuous-time model (training.continuous=True)")
  coefs = sde.marginal_coefs if continuous else (lambda t: discrete_coefs(sde, t))

  def network(x, t):
    return apply_fn(params, x, noise_labels(sde, t, continuous), train, rngs)

  def score_fn(x, t):
    a, s = coefs(t)
    if parameterization == "edm":
      # D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat), score = (D - x_hat) / (sigma^2 a)   (EDM Table 1),
      # with c_skip - 1 = -sigma^2 / (sigma^2 + sigma_data^2) in closed form: no cancellation at small sigma.
      sigma = s / a
      x_hat = x / batch_broadcast(a, x)
      norm2 = jnp.square(sigma) + sigma_data**2
      c_out, c_in = sigma * sigma_data / jnp.sqrt(norm2), 1.0 / jnp.sqrt(norm2)
      out = apply_fn(params, batch_broadcast(c_in, x) * x_hat, noise_labels(sde, t, continuous), train, rngs)
      residual = -batch_broadcast(jnp.square(sigma) / norm2, x) * x_hat + batch_broadcast(c_out, x) * out   # D - x_hat
      return residual / batch_broadcast(jnp.square(sigma) * a, x)
    out = network(x, t)
    if parameterization == "velocity":
      return score_from_velocity(sde, x, t, out)
    if parameterization == "epsilon" or not sde.variance_exploding:
      return -out / batch_broadcast(s, x)                                  # eps-prediction: score = -eps / s
    return out / batch_broadcast(s, x) if scale_by_sigma else out          # VE: s = sigma

  return score_fn
