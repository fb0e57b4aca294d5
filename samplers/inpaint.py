"""Inpainting and colorization with an unconditional score model (Song et al. 2021 app. I.2).

The observation is ``known`` where ``mask`` is 1; the sampler must draw the other coordinates from
p(x_unknown | x_known). Three algorithms (``INPAINT_ALGORITHMS``), on two step rules
(``INPAINT_METHODS``: "pc" predictor-corrector steps, "dpm_solver_pp" DPM-Solver++(2M) steps):

* ``replacement`` -- score_sde's method: after every reverse step the observed coordinates are
  replaced by a fresh forward sample a(t) known + s(t) z. It starts consistent (the observed part
  of x(T) is a forward sample as well, not clean data: score_sde_pytorch#39). The unobserved part
  is never told how likely the observed one is, so mode weights are biased.
* ``repaint`` -- RePaint (Lugmayr et al. 2022, Alg. 1, jump length 1): each reverse step is redone
  ``n_resample`` times, diffusing the result back by the forward kernel in between, which lets the
  unobserved part adapt to the observed one. Not exact; costs n_resample x the NFE; "pc" only (RePaint
  assumes stochastic reverse steps; with deterministic DPM-Solver++ steps it sent every oracle sample
  to the wrong mode).
* ``smc`` -- the filtering posterior sampler (Dou & Song, ICLR 2024, FPS-SMC): a forward-consistent
  sequence y(t) of the observed coordinates (a Brownian-bridge-like chain that starts at
  a(T) known + s(T) z and is pulled to ``known``; see ``_bridge_step``) is treated as observations of
  the reverse chain, and ``n_particles`` particles per sample move by the reverse transition and
  are weighted by the transition density of the observed coordinates at y. Because x(0)_unknown is
  independent of y(t > 0) given x(0)_known, the particle system targets p(x_unknown | known) of the
  discretised reverse chain: its error falls as particles grow (asymptotically exact). Costs one
  score call on B x n_particles inputs per step.

Colorization (``get_colorizer``) is inpainting in a decorrelated colour basis whose first axis is
the grey level.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from samplers import common, pc, schedules
from sde_lib import SDE, ScoreFn, batch_broadcast

INPAINT_ALGORITHMS = ("replacement", "repaint", "smc")
INPAINT_METHODS = ("pc", "dpm_solver_pp")
# The README's recommended defaults of each algorithm's own options.
ALGORITHM_DEFAULTS = {"replacement": {}, "repaint": {"n_resample": 10},
                      "smc": {"n_particles": 16, "ess_threshold": 0.5}}
METHOD_DEFAULTS = {
    "pc": dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, corrector_steps=1, num_steps=None,
               t_min=1e-3, denoise=True, langevin_step_rule="batch"),
    "dpm_solver_pp": dict(num_steps=20, t_min=1e-3, sigma_floor=0.002, rho=7.0, denoise=True),
}
# The reverse transitions whose Gaussian density the smc weights need: (x_mean, std [B]).
SMC_PREDICTORS = ("reverse_diffusion", "ancestral_sampling", "euler_maruyama")
_LOG_2PI = math.log(2 * math.pi)
_INIT = 1 << 30            # noise path of x(T) and y(T), apart from the grid steps 0..N-1


def _noise(keys: jax.Array, path: tuple, shape) -> jax.Array:
  """Standard normal [B, ...] from each sample's key folded with the integers of ``path``."""
  def one(k):
    for p in path:
      k = jax.random.fold_in(k, p)
    return jax.random.normal(k, tuple(shape[1:]))
  return jax.vmap(one)(keys)


def _forward_sample(sde: SDE, x0: jax.Array, t: jax.Array, z: jax.Array) -> jax.Array:
  """a(t) x0 + s(t) z: a draw of the forward marginal given clean x0 (t scalar)."""
  a, s = sde.marginal_coefs(t)
  return a * x0 + s * z


def _bridge_step(sde: SDE, y: jax.Array, known: jax.Array, t, t_next, z: jax.Array) -> jax.Array:
  """A draw of y(t_next) | y(t), y(0) = known for t_next < t: the Gaussian posterior of the forward chain.

  With x_t = alpha x_s + sqrt(v) z (``SDE.transition_coefs``, s = t_next) and x_s | x_0 ~ N(a_s x_0, s_s^2):
      mean = (a_s v / s_t^2) x_0 + (alpha s_s^2 / s_t^2) x_t,   var = v s_s^2 / s_t^2   (Ho et al. 2020 eq. 7)
  so that run from y(T) ~ N(a_T known, s_T^2) it gives y(t) with the forward marginal at every t.
  """
  alpha, v = sde.transition_coefs(t, t_next)
  a_s, s_s = sde.marginal_coefs(t_next)
  s_t = sde.marginal_coefs(t)[1]
  mean = (a_s * v / s_t**2) * known + (alpha * s_s**2 / s_t**2) * y
  return mean + jnp.sqrt(v * s_s**2 / s_t**2) * z


def _jump_back(sde: SDE, x: jax.Array, t_next, t, z: jax.Array) -> jax.Array:
  """x(t) from x(t_next) by the forward kernel x_t = alpha x_{t_next} + sqrt(v) z (RePaint's resampling jump)."""
  alpha, v = sde.transition_coefs(t, t_next)
  return alpha * x + jnp.sqrt(v) * z


def _check_observation(known, mask, shape):
  """known and mask of the sample shape; a concrete mask must hold only 0 and 1, and not all of one."""
  if tuple(known.shape) != tuple(shape) or tuple(mask.shape) != tuple(shape):
    raise ValueError(f"known and mask must both have the sample shape {tuple(shape)}, "
                     f"got {tuple(known.shape)} and {tuple(mask.shape)}")
  if not isinstance(mask, jax.core.Tracer):
    m = np.asarray(mask)
    if not np.all((m == 0) | (m == 1)):
      raise ValueError("mask must hold only 0 (unknown) and 1 (observed)")


# ------------------------------------------------------------------------------ step rules
class _PCSteps:
  """PC steps on the uniform grid t = linspace(T, t_min, N + 1) (as ``get_pc_sampler``)."""

  def __init__(self, sde, shape, *, predictor, corrector, snr, corrector_steps, num_steps, t_min, denoise,
               langevin_step_rule):
    self.pred = pc._resolve(pc.PREDICTORS, pc.Predictor, "predictor", predictor)
    self.corr = pc._resolve(pc.CORRECTORS, pc.Corrector, "corrector", corrector)
    self.predictor_name = predictor if isinstance(predictor, str) else None
    common.check_positive("snr", snr)
    self.snr, self.rule = snr, langevin_step_rule
    common.check_choice("langevin_step_rule", langevin_step_rule, pc.LANGEVIN_STEP_RULES)
    self.n_corr = common.check_steps("corrector_steps", corrector_steps)
    self.N = common.check_steps("num_steps", sde.N if num_steps is None else num_steps)
    self.t_min = common.check_t_min(sde, t_min)
    self.denoise = bool(denoise)
    self.sde, self.shape = sde, shape
    self.step_nfe = self.pred.nfe + self.n_corr * self.corr.nfe

  def times(self):
    return jnp.linspace(self.sde.T, self.t_min, self.N + 1)

  def init_state(self, x):
    return ()

  def step(self, score_fn, times, k, x, state, keys, salt):
    """One corrector-predictor step from times[k] to times[k+1]: (x_next, state)."""
    batch = x.shape[0]
    t, t_next = common.full_time(times[k], batch), common.full_time(times[k + 1], batch)

    def correct(j, x):
      return self.corr(self.sde, score_fn, x, t, _noise(keys, (k, salt, j + 1), x.shape), self.snr, self.rule)[0]

    if self.corr.nfe:
      x = jax.lax.fori_loop(0, self.n_corr, correct, x)
    x_next, _ = self.pred(self.sde, score_fn, x, t, t_next, _noise(keys, (k, salt, 0), x.shape), False)
    return x_next, state

  def transition(self, score_fn, times, k, x):
    """The predictor's Gaussian reverse transition from times[k]: (mean [B, ...], std [B]) (smc only)."""
    batch = x.shape[0]
    t, t_next = common.full_time(times[k], batch), common.full_time(times[k + 1], batch)
    _, mean = self.pred(self.sde, score_fn, x, t, t_next, jnp.zeros_like(x), False)
    if self.predictor_name == "reverse_diffusion":
      std = self.sde.discretize(x, t, t_next)[1]                     # rev_G = G (eq. 46)
    elif self.predictor_name == "euler_maruyama":
      std = self.sde.sde(x, t)[1] * jnp.sqrt(t - t_next)             # g(t) sqrt(|dt|) (seed 004 eq. 3)
    else:
      std = self.sde.ancestral_step_coefs(t, t_next)[2]              # the DDPM posterior std
    return mean, std


class _DPMSolverSteps:
  """DPM-Solver++(2M) steps (Lu et al. 2022b, Alg. 2) on EDM's rho-grid in sigma, as ``get_dpm_solver_pp_sampler``.

  The first step, and the first after a change of the observed part, is first order (DDIM);
  x0 of the previous step is carried in the state.
  """

  def __init__(self, sde, shape, *, num_steps, t_min, sigma_floor, rho, denoise):
    self.N = common.check_steps("num_steps", num_steps)
    self.t_min = common.check_t_min(sde, t_min)
    common.check_positive("sigma_floor", sigma_floor)
    common.check_positive("rho", rho)
    self.sigma_floor, self.rho, self.denoise = sigma_floor, rho, bool(denoise)
    self.sde, self.shape = sde, shape
    self.step_nfe = 1

  def times(self):
    sigmas = schedules.sigma_grid(self.sde, self.N, "edm", t_min=self.t_min, sigma_floor=self.sigma_floor, rho=self.rho)
    return schedules.times_of(self.sde, sigmas)

  def init_state(self, x):
    return (jnp.zeros_like(x), jnp.asarray(True))                     # (x0 of the previous step, first-order flag)

  def step(self, score_fn, times, k, x, state, keys, salt):
    x0_prev, first = state
    batch = x.shape[0]
    sde = self.sde
    lam = lambda t: -jnp.log(sde.sigma(t))                          # half-log-SNR lambda = log(a / s)
    x0 = common.tweedie_denoise(sde, score_fn, x, common.full_time(times[k], batch))
    h = lam(times[k + 1]) - lam(times[k])
    r = (lam(times[k]) - lam(times[jnp.maximum(k - 1, 0)])) / h
    d = jnp.where(first, x0, (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev)   # Alg. 2's D_i; D_1 = x0
    a_next, s_next = sde.marginal_coefs(times[k + 1])
    s_now = sde.marginal_coefs(times[k])[1]
    return (s_next / s_now) * x - a_next * jnp.expm1(-h) * d, (x0, jnp.asarray(False))


_STEPS = {"pc": _PCSteps, "dpm_solver_pp": _DPMSolverSteps}


# ----------------------------------------------------------------------------- the inpainter
def get_inpainter(sde: SDE, shape, method: str = "pc", algorithm: str = "smc", **options):
  """Builds ``inpaint_fn(key, score_fn, known [shape], mask [shape]) -> (x [shape], nfe)``.

  ``mask`` is 1 where ``known`` is observed; the output equals ``known`` there. The unobserved
  coordinates are drawn from p(x_unknown | known) by ``algorithm`` (see the module docstring) with
  the step rule ``method``.

  Options: the step rule's (``METHOD_DEFAULTS``: for "pc" predictor, corrector, snr,
  corrector_steps, num_steps, t_min, denoise, langevin_step_rule; for "dpm_solver_pp" num_steps,
  t_min, sigma_floor, rho, denoise) and the algorithm's (``ALGORITHM_DEFAULTS``: repaint's
  ``n_resample`` U, the number of times each step is taken; smc's ``n_particles`` and
  ``ess_threshold``, the effective sample size, as a fraction of n_particles, below which the
  particles are resampled). smc needs method "pc" with a predictor in ``SMC_PREDICTORS`` and no
  corrector (its default here is "none").

  nfe counts score calls: grid steps x (the step's calls) x n_resample, + 1 for ``denoise``. With smc
  every call evaluates B x n_particles inputs.

  Raises:
    ValueError: an unknown method, algorithm or option, a bad option value, a method/algorithm pair
      that does not go together; (when called) known and mask not of the sample shape.
  """
  shape = common.check_shape(shape)
  common.check_choice("method", method, INPAINT_METHODS)
  common.check_choice("algorithm", algorithm, INPAINT_ALGORITHMS)
  own = dict(ALGORITHM_DEFAULTS[algorithm])
  step_options = dict(METHOD_DEFAULTS[method])
  if algorithm == "smc" and method == "pc":
    step_options["corrector"] = "none"
  for name, value in options.items():
    if name in own:
      own[name] = value
    elif name in step_options:
      step_options[name] = value
    else:
      valid = sorted(set(own) | set(step_options))
      raise ValueError(f"unknown option {name!r} for method {method!r} with algorithm {algorithm!r}; valid: {valid}")
  steps = _STEPS[method](sde, shape, **step_options)
  batch = shape[0]
  if algorithm == "smc":
    if method != "pc":
      raise ValueError(f"algorithm 'smc' needs method 'pc' (a stochastic reverse transition), got {method!r}")
    if step_options["predictor"] not in SMC_PREDICTORS or step_options["corrector"] != "none":
      raise ValueError(f"algorithm 'smc' needs predictor in {list(SMC_PREDICTORS)} and corrector 'none', got "
                       f"{step_options['predictor']!r} and {step_options['corrector']!r}")
    n_particles = common.check_steps("n_particles", own["n_particles"])
    ess = own["ess_threshold"]
    if isinstance(ess, bool) or not isinstance(ess, (int, float)) or not 0 <= ess <= 1:
      raise ValueError(f"ess_threshold must be a number in [0, 1], got {ess!r}")
    return _smc(sde, shape, steps, n_particles, float(ess))
  if algorithm == "repaint" and method != "pc":
    raise ValueError(f"algorithm 'repaint' needs method 'pc' (its resampling assumes a stochastic reverse step), "
                     f"got {method!r}")
  n_resample = common.check_steps("n_resample", own["n_resample"]) if algorithm == "repaint" else 1
  nfe = steps.N * steps.step_nfe * n_resample + int(steps.denoise)
  grid = np.asarray(steps.times(), np.float32)                       # built once, outside any trace

  def inpaint_fn(key: jax.Array, score_fn: ScoreFn, known: jax.Array, mask: jax.Array):
    _check_observation(known, mask, shape)
    mask = jnp.asarray(mask, bool)
    keys = common.per_sample_keys(key, batch)
    times = jnp.asarray(grid)
    observe = lambda x, t, path: jnp.where(mask, _forward_sample(sde, known, t, _noise(keys, path, shape)), x)
    x = observe(sde.prior_std * _noise(keys, (_INIT, 0), shape), times[0], (_INIT, 1))   # a consistent x(T)

    def grid_step(k, carry):
      x, state = carry

      def attempt(u, inner):
        x_t, _, state = inner
        x_next, state = steps.step(score_fn, times, k, x_t, state, keys, 2 * u + 2)
        x_next = observe(x_next, times[k + 1], (k, 2 * u + 3, 0))
        x_back = _jump_back(sde, x_next, times[k + 1], times[k], _noise(keys, (k, 2 * u + 3, 1), shape))
        return x_back, x_next, state

      _, x_next, state = jax.lax.fori_loop(0, n_resample, attempt, (x, x, state))
      return x_next, state

    x, _ = jax.lax.fori_loop(0, steps.N, grid_step, (x, steps.init_state(x)))
    if steps.denoise:
      x = common.tweedie_denoise(sde, score_fn, x, common.full_time(times[-1], batch))
    return jnp.where(mask, known, x), jnp.asarray(nfe, jnp.int32)

  return inpaint_fn


def _systematic_resample(key: jax.Array, log_w: jax.Array) -> jax.Array:
  """Indices [P] of systematic resampling of P particles with log weights [P] (Douc et al. 2005)."""
  p = log_w.shape[0]
  cdf = jnp.cumsum(jax.nn.softmax(log_w))
  positions = (jax.random.uniform(key) + jnp.arange(p)) / p
  return jnp.minimum(jnp.searchsorted(cdf, positions), p - 1)


def _smc(sde: SDE, shape, steps: _PCSteps, n_particles: int, ess_threshold: float):
  batch, P = shape[0], n_particles
  nfe = steps.N * steps.step_nfe + int(steps.denoise)
  flat = (batch * P,) + shape[1:]
  grid = np.asarray(steps.times(), np.float32)

  def inpaint_fn(key: jax.Array, score_fn: ScoreFn, known: jax.Array, mask: jax.Array):
    _check_observation(known, mask, shape)
    maskb = jnp.asarray(mask, bool)
    keys = common.per_sample_keys(key, batch)                              # y(t) and resampling: per sample
    pkeys = common.per_sample_keys(jax.random.fold_in(key, 1 << 20), batch * P)   # moves: per particle
    times = jnp.asarray(grid)
    rep = lambda v: jnp.repeat(v, P, axis=0)                               # [B, ...] -> [B P, ...], sample-major
    known_p, mask_p = rep(known), rep(maskb)
    y = _forward_sample(sde, known, times[0], _noise(keys, (_INIT, 1), shape))   # y(T)
    x = jnp.where(mask_p, rep(y), sde.prior_std * _noise(pkeys, (_INIT, 0), flat))
    log_w = jnp.zeros((batch, P))

    def grid_step(k, carry):
      x, y, log_w = carry
      mean, std = steps.transition(score_fn, times, k, x)
      y = _bridge_step(sde, y, known, times[k], times[k + 1], _noise(keys, (k, 0), shape))
      y_p = rep(y)
      # Weight: the reverse transition's density of the observed coordinates at y(t_next) (FPS eq. 9).
      z = (y_p - mean) / batch_broadcast(std, x)
      log_n = -0.5 * jnp.square(z) - batch_broadcast(jnp.log(std), x) - 0.5 * _LOG_2PI
      log_w = log_w + jnp.sum(jnp.where(mask_p, log_n, 0.0).reshape(batch * P, -1), axis=1).reshape(batch, P)
      x = jnp.where(mask_p, y_p, mean + batch_broadcast(std, x) * _noise(pkeys, (k, 1), flat))
      # Resample each sample's particles when their effective sample size falls below the threshold.
      w = jax.nn.softmax(log_w, axis=1)
      resample = 1.0 / jnp.sum(jnp.square(w), axis=1) < ess_threshold * P           # [B]
      idx = jax.vmap(_systematic_resample)(jax.vmap(lambda kk: jax.random.fold_in(kk, k))(keys), log_w)
      idx = jnp.where(resample[:, None], idx, jnp.arange(P)[None])
      x = x.reshape((batch, P) + shape[1:])
      x = jnp.take_along_axis(x, idx.reshape((batch, P) + (1,) * (len(shape) - 1)), axis=1).reshape(flat)
      log_w = jnp.where(resample[:, None], 0.0, log_w)
      return x, y, log_w

    x, _, log_w = jax.lax.fori_loop(0, steps.N, grid_step, (x, y, log_w))
    if steps.denoise:
      x = common.tweedie_denoise(sde, score_fn, x, common.full_time(times[-1], batch * P))
    # One particle per sample, drawn by the final weights.
    pick = jax.vmap(lambda kk, lw: jax.random.categorical(jax.random.fold_in(kk, 1 << 21), lw))(keys, log_w)
    x = x.reshape((batch, P) + shape[1:])[jnp.arange(batch), pick]
    return jnp.where(maskb, known, x), jnp.asarray(nfe, jnp.int32)

  return inpaint_fn


# --------------------------------------------------------------------------- image masks
IMAGE_MASKS = ("bottom_half", "top_half", "left_half", "right_half", "center")


def image_mask(name: str, shape) -> np.ndarray:
  """1 where a pixel is observed: float32 [H, W, C] for one of ``IMAGE_MASKS`` ("bottom_half": the bottom half
  is unknown, the top half observed; "center": the central half-size square is unknown)."""
  h, w, c = shape
  mask = np.ones((h, w, c), np.float32)
  if name == "bottom_half":
    mask[h // 2:] = 0
  elif name == "top_half":
    mask[:h - h // 2] = 0
  elif name == "right_half":
    mask[:, w // 2:] = 0
  elif name == "left_half":
    mask[:, :w - w // 2] = 0
  elif name == "center":
    mask[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
  else:
    raise ValueError(f"mask must be one of {list(IMAGE_MASKS)}, got {name!r}")
  return mask


# ----------------------------------------------------------------------------- colorization
def colorization_basis() -> np.ndarray:
  """An orthogonal 3x3 matrix M whose first column is the grey axis (1, 1, 1)/sqrt(3).

  Columns: grey, (1, -1, 0)/sqrt(2) and (1, 1, -2)/sqrt(6), mutually orthogonal unit vectors (a
  Helmert basis). u = x M maps RGB to (grey level x sqrt 3, two chroma axes); x = u M^T maps back.
  It must be orthogonal: the forward SDE adds isotropic noise s(t)^2 I, and only under an
  orthogonal map does that noise stay isotropic, so that u(t) is the same SDE applied to u(0) and
  the score transforms as score_u(u, t) = score_x(u M^T, t) M. A non-orthogonal basis (e.g. YUV)
  would correlate the noise across channels and the inpainter's kernel a(t) u0 + s(t) z would be wrong.
  """
  return np.stack([np.ones(3) / np.sqrt(3), np.array([1.0, -1.0, 0.0]) / np.sqrt(2),
                   np.array([1.0, 1.0, -2.0]) / np.sqrt(6)], axis=1)


def get_colorizer(sde: SDE, shape, method: str = "pc", algorithm: str = "smc", **options):
  """Builds ``colorize_fn(key, score_fn, grey [B, H, W, 1] or [B, H, W, 3]) -> (x [shape], nfe)``.

  Inpainting (``get_inpainter``, same options) in the basis of ``colorization_basis``, observing its
  grey axis: the output's channel mean equals the input's grey level (for a 3-channel input, its
  channel mean). ``shape`` is [B, H, W, 3].

  Raises:
    ValueError: a shape without 3 channels last; (when called) a grey input of the wrong shape.
  """
  shape = common.check_shape(shape)
  if shape[-1] != 3:
    raise ValueError(f"colorization needs RGB samples, shape [B, H, W, 3], got {shape}")
  inpaint = get_inpainter(sde, shape, method, algorithm, **options)
  M = jnp.asarray(colorization_basis(), jnp.float32)
  mask = jnp.zeros(shape, bool).at[..., 0].set(True)

  def colorize_fn(key: jax.Array, score_fn: ScoreFn, grey: jax.Array):
    if tuple(grey.shape) not in (tuple(shape[:-1]) + (1,), tuple(shape)):
      raise ValueError(f"grey must be [B, H, W, 1] or [B, H, W, 3] with B, H, W = {shape[:-1]}, got {tuple(grey.shape)}")
    level = jnp.mean(grey, axis=-1, keepdims=True)
    known = jnp.zeros(shape).at[..., 0:1].set(level * math.sqrt(3))        # u_0 = (r + g + b)/sqrt(3)
    score_u = lambda u, t: score_fn(u @ M.T, t) @ M
    u, nfe = inpaint(key, score_u, known, mask)
    return u @ M.T, nfe

  return colorize_fn
