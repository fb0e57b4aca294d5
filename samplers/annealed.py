"""NCSN annealed Langevin dynamics (Song & Ermon 2019, Alg. 1; seed 002 Algorithm 1)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samplers import common, steps
from sde_lib import SDE, batch_broadcast, checks

DEFAULT_STEP_RATIO = 0.2   # epsilon / sigma_L^2 of NCSN (Song & Ermon 2019: 2e-5 / 0.01^2)


@dataclasses.dataclass(frozen=True)
class ALDOptions(checks.Options):
  """Options of ``get_ald_sampler``, with their defaults.

  num_steps: L noise levels. corrector_steps: Langevin steps per level. langevin_step_size: epsilon (None:
  NCSN's ratio, 0.2 sigma_L^2). t_min, sigma_floor: the lowest level is max(sigma_floor, sigma(t_min)) (NCSN's
  sigma_L = 0.01). denoise: Tweedie's step at sigma_L (1 NFE). checkpoint: rematerialise each Langevin step in
  the backward pass.
  """

  num_steps: int = checks.spec(10, checks.integer(1))
  corrector_steps: int = checks.spec(100, checks.integer(1))
  langevin_step_size: float | None = checks.spec(None, checks.optional(common.POSITIVE_FLOAT))
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  sigma_floor: float = checks.spec(0.01, common.POSITIVE_FLOAT)
  denoise: bool = checks.spec(True, checks.boolean)
  checkpoint: bool = checks.spec(False, checks.boolean)


class ALDStepper:
  """Annealed Langevin steps (``steps.Stepper``) in x_hat: step j is Langevin step j mod corrector_steps at
  level j // corrector_steps."""

  def __init__(self, sde: SDE, shape, options: ALDOptions):
    self.sde, self.shape, self.options = sde, common.check_shape(shape), options
    self.t_min = common.check_t_min(sde, options.t_min)
    self.n_levels, self.n_steps = options.num_steps, options.corrector_steps
    self.start, self.stop, self.checkpoint = 0, self.n_levels * self.n_steps, options.checkpoint
    self.step_nfe = 1
    self.nfe = self.stop + int(options.denoise)

  def _levels(self):
    sig_hi, sig_lo = common.sigma_range(self.sde, self.t_min, self.options.sigma_floor)
    if self.n_levels == 1:
      return sig_lo[None], sig_lo
    return jnp.exp(jnp.linspace(jnp.log(sig_hi), jnp.log(sig_lo), self.n_levels)), sig_lo

  def _sigma_at(self, j):
    """The noise level of state j (after j Langevin steps): that of step j's level (the last for j = stop)."""
    sigmas, _ = self._levels()
    return sigmas[jnp.minimum(j // self.n_steps, self.n_levels - 1)]

  def times(self):
    return self.sde.t_from_sigma(self._sigma_at(jnp.arange(self.stop + 1))).at[0].set(self.sde.T)

  def _scaled_score(self, score_fn, x_hat, sigma):
    t = common.full_time(self.sde.t_from_sigma(sigma), self.shape[0])
    a = batch_broadcast(self.sde.marginal_coefs(t)[0], x_hat)
    return a * score_fn(a * x_hat, t)

  def init(self, score_fn, x, keys):
    return x / self.sde.marginal_coefs(jnp.asarray(self.sde.T))[0]

  def step(self, score_fn, j, x_hat, keys):
    # x_hat <- x_hat + alpha_i/2 score_hat(x_hat, sigma_i) + sqrt(alpha_i) z,  alpha_i = eps sigma_i^2 / sigma_L^2
    # (seed 002 Alg. 1 line 6).
    sigmas, sig_lo = self._levels()
    eps_step = self.options.langevin_step_size
    eps_step = DEFAULT_STEP_RATIO * jnp.square(sig_lo) if eps_step is None else eps_step
    sigma = sigmas[j // self.n_steps]
    alpha = eps_step * jnp.square(sigma / sig_lo)
    noise = common.per_sample_normal(keys, j + 1, self.shape)
    return x_hat + 0.5 * alpha * self._scaled_score(score_fn, x_hat, sigma) + jnp.sqrt(alpha) * noise

  def _a(self, j):
    return self.sde.marginal_coefs(self.sde.t_from_sigma(self._sigma_at(j)))[0]

  def x_of(self, x_hat, j):
    return self._a(j) * x_hat

  def with_x(self, x_hat, j, x):
    return x / self._a(j)

  def denoised_of(self, x_hat):
    return None

  def finish(self, score_fn, x_hat, keys):
    if self.options.denoise:
      return common.scaled_denoiser(self.sde, score_fn, self.shape[0])(x_hat, self._levels()[1])   # Tweedie at sigma_L
    return x_hat


def get_ald_sampler(sde: SDE, shape, options: ALDOptions | None = None, **overrides):
  """Annealed Langevin dynamics over a geometric ladder of noise levels, largest first (``ALDOptions``).

  NCSN is written for data plus sigma noise. On every SDE it runs in the scaled variable
  x_hat = x / a(t), whose marginal is exactly that (Karras et al. 2022 eq. 10), with the score
  grad_{x_hat} log p(x_hat; sigma) = a score(a x_hat, t(sigma)). (Run in x itself on VP-type SDEs,
  Langevin would also have to rescale the whole sample by a_i / a_{i+1} between levels, which its
  small steps do too slowly.)

  sigma_1 > ... > sigma_L geometric from sigma(T) down to max(sigma_floor, sigma(t_min)) (NCSN's
  sigma_L = 0.01; L = num_steps levels; with L = 1 the single level is the lowest: plain Langevin
  dynamics at a small noise level, seeds 000/003), ``corrector_steps`` Langevin iterations at each.
  Starts from a prior draw; ``denoise`` adds Tweedie's step at sigma_L. NFE = L corrector_steps + denoise.

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``.
  """
  return steps.sampler_from_stepper(ALDStepper(sde, shape, ALDOptions.build(options, **overrides)))
