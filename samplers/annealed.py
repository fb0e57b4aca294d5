"""NCSN annealed Langevin dynamics (Song & Ermon 2019, Alg. 1; seed 002 Algorithm 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samplers import common
from sde_lib import SDE, ScoreFn, batch_broadcast

DEFAULT_STEP_RATIO = 0.2   # epsilon / sigma_L^2 of NCSN (Song & Ermon 2019: 2e-5 / 0.01^2)


def get_ald_sampler(sde: SDE, shape, *, num_steps: int = 10, corrector_steps: int = 100,
                    langevin_step_size: float | None = None, t_min: float = 1e-3, sigma_floor: float = 0.01,
                    denoise: bool = True, checkpoint: bool = False):
  """Annealed Langevin dynamics over a geometric ladder of noise levels, largest first.

  NCSN is written for data plus sigma noise. On every SDE it runs in the scaled variable
  x_hat = x / a(t), whose marginal is exactly that (Karras et al. 2022 eq. 10), with the score
  grad_{x_hat} log p(x_hat; sigma) = a score(a x_hat, t(sigma)). (Run in x itself on VP-type SDEs,
  Langevin would also have to rescale the whole sample by a_i / a_{i+1} between levels, which its
  small steps do too slowly: on sub-VP the modes came out shrunk by ~4% of their distance.)

  sigma_1 > ... > sigma_L geometric from sigma(T) down to max(sigma_floor, sigma(t_min)) (NCSN's
  sigma_L = 0.01; L = num_steps levels; with L = 1 the single level is the lowest: plain Langevin
  dynamics at a small noise level, seeds 000/003). At each level, ``corrector_steps`` iterations of
      x_hat <- x_hat + alpha_i/2 score_hat(x_hat, sigma_i) + sqrt(alpha_i) z,  alpha_i = epsilon sigma_i^2 / sigma_L^2
  (seed 002 Alg. 1 line 6). ``langevin_step_size`` is epsilon; None takes NCSN's ratio
  epsilon = 0.2 sigma_L^2 (2e-5 at sigma_L = 0.01). Starts from a prior draw; ``denoise`` adds
  Tweedie's step at sigma_L. NFE = L corrector_steps + denoise. ``checkpoint``: rematerialise each
  Langevin step in the backward pass (``jax.checkpoint`` on the loop body; as ``get_pc_sampler``).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  shape = common.check_shape(shape)
  n_levels = common.check_steps("num_steps", num_steps)
  n_steps = common.check_steps("corrector_steps", corrector_steps)
  step_size = langevin_step_size
  if step_size is not None:
    common.check_positive("langevin_step_size", step_size)
  common.check_positive("sigma_floor", sigma_floor)
  t_min = common.check_t_min(sde, t_min)
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    sig_hi, sig_lo = common.sigma_range(sde, t_min, sigma_floor)
    if n_levels == 1:
      sigmas = sig_lo[None]
    else:
      sigmas = jnp.exp(jnp.linspace(jnp.log(sig_hi), jnp.log(sig_lo), n_levels))
    eps_step = DEFAULT_STEP_RATIO * jnp.square(sig_lo) if step_size is None else step_size
    keys = common.per_sample_keys(key, batch)

    def scaled_score(x_hat, sigma):
      t = common.full_time(sde.t_from_sigma(sigma), batch)
      a = batch_broadcast(sde.marginal_coefs(t)[0], x_hat)
      return a * score_fn(a * x_hat, t)

    def langevin_step(j, x_hat):
      sigma = sigmas[j // n_steps]
      alpha = eps_step * jnp.square(sigma / sig_lo)
      noise = common.per_sample_normal(keys, j + 1, shape)
      return x_hat + 0.5 * alpha * scaled_score(x_hat, sigma) + jnp.sqrt(alpha) * noise

    a_T = sde.marginal_coefs(jnp.asarray(sde.T))[0]
    x_hat = sde.prior_std * common.per_sample_normal(keys, 0, shape) / a_T
    step = jax.checkpoint(langevin_step) if checkpoint else langevin_step      # remat: memory for compute
    x_hat = jax.lax.fori_loop(0, n_levels * n_steps, step, x_hat)
    if denoise:
      x_hat = common.scaled_denoiser(sde, score_fn, batch)(x_hat, sig_lo)     # Tweedie at sigma_L
    return x_hat, jnp.asarray(n_levels * n_steps + int(denoise), jnp.int32)

  return sample_fn
