"""Conditional sampling given a linear observation with an unconditional score model (Song et al. 2021 app.
I.2): inpainting, colorization, and any ``Observation`` (``samplers.inverse.get_inverse_solver``).

The algorithms act on projector coordinates: an observation whose A A^T is a projection (masks, the grey
level) is used as it is; any other is seen through its SVD, where y observes the coordinates V^T x one by one
(``Observation.as_projector``). Three algorithms (``INPAINT_ALGORITHMS``), each a wrapper ``steps.Stepper``
around a sampling method's own steps (``samplers.get_stepper``), run by the one loop ``steps.run``:

* ``replacement`` -- score_sde's method: after every reverse step the observed part is replaced by a fresh
  forward sample a(t) y + s(t) A z. It starts consistent (the observed part of x(T) is a forward sample as
  well, not clean data: score_sde_pytorch#39). The unobserved part is never told how likely the observed one
  is, so mode weights are biased. Noise-free only; runs on every fixed-grid method (``INPAINT_METHODS``).
* ``repaint`` -- RePaint (Lugmayr et al. 2022, Alg. 1, jump length 1): each reverse step is redone
  ``n_resample`` times, diffusing the result back by the forward kernel in between, which lets the
  unobserved part adapt to the observed one. Not exact; costs n_resample x the NFE; noise-free; "pc" only
  (with deterministic DPM-Solver++ steps it sent every oracle sample to the wrong mode).
* ``smc`` -- the filtering posterior sampler (Dou & Song, ICLR 2024, FPS-SMC): a forward-consistent
  sequence y(t) of the observed part (a Brownian-bridge-like chain that starts at a(T) y + s(T) z and is
  pulled to y; see ``_bridge_step``) is treated as observations of the reverse chain, and ``n_particles``
  particles per sample move by the PC predictor's Gaussian reverse transition and are weighted by its
  density of the observed part at y(t). With observation noise (std tau per projector coordinate), y is the
  chain's coordinate at the time where sigma = tau, observed without noise (MCGdiff's reduction, Cardoso et
  al. 2024): the coordinate is pinned to a bridge from y while sigma(t) >= tau and free below
  (``SMCStepper._noisy_step``). What it converges to: as particles grow at a fixed number of steps, to the
  discretised chain's conditional given the bridge averaged over the bridge, which equals the posterior only
  when the model's observed-coordinate paths match the forward process (exact score, steps -> infinity).
  So it is consistent as particles and steps grow, not exact at a finite number of steps (VE, 5 steps:
  mean 1.53 against the exact 1.20 with 2,048 particles). Costs n_particles x the NFE.

Colorization (``get_colorizer``) observes the grey level of each pixel (``observation.colour_observation``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplers import common, registry, steps
from samplers.observation import IMAGE_MASKS, Observation, colour_observation, image_mask, mask_observation  # noqa: F401
from samplers.pc import GAUSSIAN_PREDICTORS
from sde_lib import SDE, ScoreFn, batch_broadcast, checks

INPAINT_ALGORITHMS = ("replacement", "repaint", "smc")
INPAINT_METHODS = registry.STEPPER_METHODS          # the methods replacement runs on; repaint and smc need "pc"
OBSERVATION_STREAM = 1 << 30    # fold_in(per-sample key, .): the observation's noise, apart from the steps'
PARTICLE_STREAM = 1 << 20       # ... the particles' moves
PICK_STREAM = 1 << 21           # ... the final particle pick


@dataclasses.dataclass(frozen=True)
class ReplacementOptions(checks.Options):
  """replacement has no options of its own."""


@dataclasses.dataclass(frozen=True)
class RepaintOptions(checks.Options):
  """n_resample: the number of times each step is taken (RePaint's U)."""

  n_resample: int = checks.spec(10, checks.integer(1))


@dataclasses.dataclass(frozen=True)
class SMCOptions(checks.Options):
  """n_particles: particles per sample. ess_threshold: resample a sample's particles when their effective
  sample size falls below this share of n_particles."""

  n_particles: int = checks.spec(16, checks.integer(1))
  ess_threshold: float = checks.spec(0.5, checks.number(0.0, 1.0))


ALGORITHM_OPTIONS = {"replacement": ReplacementOptions, "repaint": RepaintOptions, "smc": SMCOptions}


def _noise(keys: jax.Array, path: tuple, shape) -> jax.Array:
  """Standard normal [B, ...] from each sample's key folded with the integers of ``path``."""
  def one(k):
    for p in path:
      k = jax.random.fold_in(k, p)
    return jax.random.normal(k, tuple(shape[1:]))
  return jax.vmap(one)(keys)


def _bridge_step(sde: SDE, y: jax.Array, y0: jax.Array, t, t_next, z: jax.Array) -> jax.Array:
  """A draw of y(t_next) | y(t), y(0) = y0 for t_next < t: the Gaussian posterior of the forward chain.

  With x_t = alpha x_s + sqrt(v) z (``SDE.transition_coefs``, s = t_next) and x_s | x_0 ~ N(a_s x_0, s_s^2):
      mean = (a_s v / s_t^2) x_0 + (alpha s_s^2 / s_t^2) x_t,   var = v s_s^2 / s_t^2   (Ho et al. 2020 eq. 7)
  so that run from y(T) ~ N(a_T y0, s_T^2) it gives y(t) with the forward marginal at every t.
  """
  alpha, v = sde.transition_coefs(t, t_next)
  a_s, s_s = sde.marginal_coefs(t_next)
  s_t = sde.marginal_coefs(t)[1]
  mean = (a_s * v / s_t**2) * y0 + (alpha * s_s**2 / s_t**2) * y
  return mean + jnp.sqrt(v * s_s**2 / s_t**2) * z


def _jump_back(sde: SDE, x: jax.Array, t_next, t, z: jax.Array, ladder: bool = False) -> jax.Array:
  """x(t) from x(t_next) by the forward kernel x_t = alpha x_{t_next} + sqrt(v) z (RePaint's resampling jump);
  on the ladder, the chain's own kernel from level i(t) - 1 to i(t)."""
  alpha, v = sde.transition_coefs(t) if ladder else sde.transition_coefs(t, t_next)
  return alpha * x + jnp.sqrt(v) * z


def ladder_marginal(sde: SDE, t) -> tuple[jax.Array, jax.Array]:
  """(a_i, s_i) of the discrete chain's level i(t) (``SDE.discrete_coefs``); level -1 (t < 0) is the data."""
  a, s = sde.discrete_marginal(t)
  clean = jnp.asarray(t) < 0
  return jnp.where(clean, 1.0, a), jnp.where(clean, 0.0, s)


class _Observed:
  """The observation as SMC and replacement see it: a projector P (a partial isometry), its data y_P and the
  noise std tau of y_P about P x (0: noise-free; an array of P's output shape, or a scalar)."""

  def __init__(self, sde: SDE, observation: Observation, y: jax.Array, shape, tau=0.0, ladder: bool = False):
    self.sde, self.obs, self.y, self.shape, self.tau, self.ladder = sde, observation, y, shape, tau, ladder
    self.noisy = not (isinstance(tau, (int, float)) and tau == 0)

  def noise(self, keys, path) -> jax.Array:
    """P z, z ~ N(0, I) in sample space: isotropic noise of the observed part (P is a partial isometry)."""
    return self.obs.forward(_noise(keys, (OBSERVATION_STREAM,) + path, self.shape))

  def at(self, keys, t, path) -> jax.Array:
    """y(t) = a(t) y_P + s(t) P z, a forward sample; it observes P x(t) with noise a(t) tau (Dou & Song 2024)."""
    a, s = ladder_marginal(self.sde, t) if self.ladder else self.sde.marginal_coefs(t)
    return a * self.y + s * self.noise(keys, path)

  def impose(self, x, keys, t, path) -> jax.Array:
    """x with its observed part replaced by a forward sample at time t."""
    return self.obs.replace_observed(x, self.at(keys, t, path))


def prepare_observed(sde: SDE, observation: Observation, y: jax.Array, shape, projector=None) -> _Observed:
  """``_Observed`` of any linear observation: a projector's own (tau = noise_std), else the SVD coordinates'
  (``Observation.as_projector``: tau_i = noise_std / s_i). ``projector``: ``as_projector(shape)`` computed
  beforehand (outside jit), or None."""
  if observation.projector:
    if observation.noise_std > 0:                        # A A^T y: y's part A can explain (masks: 0 where unobserved)
      y = observation.forward(observation.transpose(y).reshape(shape))
    return _Observed(sde, observation, y, shape, observation.noise_std)
  proj, data, sp = projector if projector is not None else observation.as_projector(shape)
  tau = 0.0
  if observation.noise_std > 0:
    tau = jnp.broadcast_to(sp.noise_levels(observation.noise_std), (shape[0], math.prod(shape[1:])))
  return _Observed(sde, proj, data(y), shape, tau)


class ResampleStepper(steps.WrappedStepper):
  """replacement (``n_resample`` = 1) and RePaint as a ``steps.Stepper`` around a method's stepper."""

  def __init__(self, inner, observed: _Observed, n_resample: int):
    super().__init__(inner)
    self.observed, self.U = observed, n_resample
    self.nfe = inner.nfe + (n_resample - 1) * (inner.stop - inner.start) * inner.step_nfe
    self.step_nfe = n_resample * inner.step_nfe

  def init(self, score_fn, x, keys):
    x = self.observed.impose(x, keys, self.times()[0], (0, 0))               # a consistent x(T)
    return self.inner.init(score_fn, x, keys)

  def step(self, score_fn, k, state, keys):
    inner, times = self.inner, self.times()

    def attempt(u, state):
      u_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, u))(keys) if self.U > 1 else keys
      nxt = inner.step(score_fn, k, state, u_keys)
      x_next = self.observed.impose(inner.x_of(nxt, k + 1), keys, times[k + 1], (k + 1, 2 * u))
      return inner.with_x(nxt, k + 1, x_next)

    if self.U == 1:
      return attempt(0, state)

    def redo(u, carry):
      state, _ = carry
      nxt = attempt(u, state)
      back = _jump_back(self.sde, inner.x_of(nxt, k + 1), times[k + 1], times[k], ladder=self.observed.ladder, z=
                        _noise(keys, (OBSERVATION_STREAM, k + 1, 2 * u + 1), self.shape))
      return inner.with_x(state, k, back), nxt

    return jax.lax.fori_loop(0, self.U, redo, (state, state))[1]

  def finish(self, score_fn, state, keys):
    return self.observed.obs.replace_observed(self.inner.finish(score_fn, state, keys), self.observed.y)


def _systematic_resample(key: jax.Array, log_w: jax.Array) -> jax.Array:
  """Indices [P] of systematic resampling of P particles with log weights [P] (Douc et al. 2005)."""
  p = log_w.shape[0]
  cdf = jnp.cumsum(jax.nn.softmax(log_w))
  positions = (jax.random.uniform(key) + jnp.arange(p)) / p
  return jnp.minimum(jnp.searchsorted(cdf, positions), p - 1)


class SMCStepper:
  """FPS-SMC (see the module docstring) as a ``steps.Stepper``: the state is (particles [B P, ...], the
  bridge y(t) [B, ...], log weights [B, P]); ``inner`` is a ``PCStepper`` on [B P, ...] with no corrector."""

  def __init__(self, inner, observed: _Observed, n_particles: int, ess_threshold: float):
    self.inner, self.observed, self.P, self.ess = inner, observed, n_particles, ess_threshold
    self.sde, self.shape = inner.sde, observed.shape
    self.start, self.stop, self.checkpoint, self.nfe = inner.start, inner.stop, inner.checkpoint, inner.nfe

  def times(self):
    return self.inner.times()

  def _particle_keys(self, keys):
    """Per-particle keys [B P], sample-major; sample b's particles depend on its own key only."""
    return jax.vmap(lambda kk: common.per_sample_keys(jax.random.fold_in(kk, PARTICLE_STREAM), self.P))(keys).reshape(-1)

  def _rep(self, v):
    return jnp.repeat(v, self.P, axis=0)                                  # [B, ...] -> [B P, ...], sample-major

  def _per_particle(self, fn, *arrays):
    """``fn`` of [B, ...] arrays (the observation, whose operator may differ per sample) on [B P, ...] ones."""
    batch, P = self.shape[0], self.P
    split = [a.reshape((batch, P) + a.shape[1:]) for a in arrays]
    out = jax.vmap(fn, in_axes=1, out_axes=1)(*split)
    return out.reshape((batch * P,) + out.shape[2:])

  def _clock(self, t):
    """v(t) = sigma(t)^2 - tau^2 per observed coordinate [B, ...], sigma = s / a: while v >= 0 the coordinate of
    z(t) = x(t) / a(t) is the noisy datum y_P plus forward noise of variance v (see ``_noisy_step``)."""
    a, s = self.sde.marginal_coefs(t)
    return jnp.square(s / a) - jnp.square(jnp.broadcast_to(self.observed.tau, self.observed.y.shape))

  def init(self, score_fn, x, keys):
    batch, obs, T = self.shape[0], self.observed, self.times()[0]
    z = _noise(self._particle_keys(keys), (0,), self.inner.shape)
    prior = self.sde.prior_std * z
    if not obs.noisy:
      y = obs.at(keys, T, (0, 0))                                         # y(T)
      return self._per_particle(obs.obs.replace_observed, prior, self._rep(y)), y, jnp.zeros((batch, self.P))
    # Noisy: a coordinate with v(T) >= 0 starts at its bridge's first point a(T) (y_P + sqrt(v) z); one with
    # v(T) < 0 (tau above sigma(T)) is drawn from the prior times the datum's likelihood N(a y_P; ., a^2 (-v)).
    a = self.sde.marginal_coefs(T)[0]
    v = self._clock(T)
    y = obs.y + jnp.sqrt(jnp.maximum(v, 0.0)) * obs.noise(keys, (0, 0))   # the bridge, in z = x / a
    prior_var, r2 = self.sde.prior_std ** 2, self._rep(jnp.square(a) * jnp.maximum(-v, 0.0))
    gain = prior_var / (prior_var + r2)                                   # Gaussian product (Bishop eq. 2.116)
    free = gain * a * self._rep(obs.y) + jnp.sqrt(prior_var * (1 - gain)) * self._per_particle(obs.obs.forward, z)
    c = jnp.where(self._rep(v) >= 0, a * self._rep(y), free)
    return self._per_particle(obs.obs.replace_observed, prior, c), y, jnp.zeros((batch, self.P))

  def _noisy_step(self, k, y, mean, var, moved, keys):
    """(log weight increments [B P], observed part [B P, ...], bridge [B, ...]) of a noisy observation; var:
    the transition's variance per particle [B P].

    y_P = P x_0 + tau eps is what P z(t_tau) would be, sigma(t_tau) = tau: z(t) = x(t) / a(t) has independent
    increments of variance d sigma^2 (linear drift), so observing y_P is observing the chain at t_tau without
    noise (Cardoso et al. 2024, MCGdiff, sec. 3.2). While sigma(t) >= tau the coordinate is pinned to a
    Brownian bridge from y_P on the clock v = sigma^2 - tau^2 and weighted as a noise-free one. On the step
    that crosses t_tau (sigma_k >= tau > sigma_{k+1}) z(t_tau) = y_P lies between the levels: given z_{k+1}
    and z_k it is a Brownian bridge on the clock u = sigma^2, y_P = (1 - lam) z_{k+1} + lam z_k + N(0, b) with
    lam = (tau^2 - u_{k+1}) / (u_k - u_{k+1}) and b = (tau^2 - u_{k+1}) (u_k - tau^2) / (u_k - u_{k+1}), a
    Gaussian likelihood of z_{k+1}: the proposal is the transition times it and the weight its predictive
    density (Bishop eq. 2.115-2.116). Below t_tau the coordinate moves freely. Exact as particles and steps
    grow; with tau = 0 it is the noise-free sampler.
    """
    obs, times = self.observed, self.times()
    v, v_next = self._clock(times[k]), self._clock(times[k + 1])
    a_next = self.sde.marginal_coefs(times[k + 1])[0]
    pinned = v_next >= 0
    ratio = v_next / jnp.where(pinned, v, 1.0)
    bridge = obs.y + ratio * (y - obs.y) + jnp.sqrt(jnp.maximum(v_next * (1 - ratio), 0.0)) * obs.noise(keys, (k + 1, 0))
    y_next = jnp.where(pinned, bridge, y)
    pinned_p, release_p = self._rep(pinned), self._rep((v >= 0) & ~pinned)
    pm = self._per_particle(obs.obs.forward, mean)
    var = batch_broadcast(var, pm)
    free = self._per_particle(obs.obs.forward, moved)
    # Pinned: the bridge's point, weighted by the transition's density there (FPS eq. 9).
    target = a_next * self._rep(y_next)
    log_w = jnp.where(pinned_p, -0.5 * jnp.square(target - pm) / var, 0.0)
    # Crossing t_tau: the transition (in z, mean m, variance w) times the bridge likelihood of y_P.
    u_k, u_n = jnp.square(self.sde.sigma(times[k])), jnp.square(self.sde.sigma(times[k + 1]))
    tau2 = self._rep(u_k - v)
    lam = (tau2 - u_n) / (u_k - u_n)
    b = (tau2 - u_n) * (u_k - tau2) / (u_k - u_n)
    m, w = pm / a_next, var / a_next**2
    r = self._rep(obs.y) - (1 - lam) * m - lam * self._rep(y)
    den = (1 - lam) ** 2 * w + b
    safe = jnp.where(release_p & (den > 0), den, 1.0)
    gain = jnp.where(release_p & (den > 0), (1 - lam) * w / safe, 0.0)
    released = pm + a_next * gain * r + jnp.sqrt(jnp.maximum(1 - gain * (1 - lam), 0.0)) * (free - pm)
    log_w = log_w + jnp.where(release_p, -0.5 * jnp.square(r) / safe, 0.0)
    c = jnp.where(pinned_p, target, jnp.where(release_p, released, free))
    return jnp.sum(log_w.reshape(log_w.shape[0], -1), axis=1), c, y_next

  def step(self, score_fn, k, state, keys):
    x, y, log_w = state
    batch, P, obs, times = self.shape[0], self.P, self.observed, self.times()
    mean, std = self.inner.transition(score_fn, k, x)
    moved = mean + batch_broadcast(std, x) * _noise(self._particle_keys(keys), (k + 1, 1), self.inner.shape)
    if obs.noisy:
      increment, c, y = self._noisy_step(k, y, mean, jnp.square(std), moved, keys)
      x = self._per_particle(obs.obs.replace_observed, moved, c)
    else:
      y = _bridge_step(self.sde, y, obs.y, times[k], times[k + 1], obs.noise(keys, (k + 1, 0)))
      y_p = self._rep(y)
      # Weight: the reverse transition's density of the observed part at y(t_next) (FPS eq. 9); the Gaussian's
      # normalising constant is the same for every particle of a sample and cancels.
      resid = (y_p - self._per_particle(obs.obs.forward, mean)) / batch_broadcast(std, y_p)
      increment = -0.5 * jnp.sum(jnp.square(resid).reshape(batch * P, -1), axis=1)
      x = self._per_particle(obs.obs.replace_observed, moved, y_p)
    log_w = log_w + increment.reshape(batch, P)
    # Resample each sample's particles when their effective sample size falls below the threshold.
    w = jax.nn.softmax(log_w, axis=1)
    resample = 1.0 / jnp.sum(jnp.square(w), axis=1) < self.ess * P                 # [B]
    idx = jax.vmap(_systematic_resample)(jax.vmap(lambda kk: jax.random.fold_in(kk, k))(keys), log_w)
    idx = jnp.where(resample[:, None], idx, jnp.arange(P)[None])
    shape = self.shape
    x = x.reshape((batch, P) + shape[1:])
    x = jnp.take_along_axis(x, idx.reshape((batch, P) + (1,) * (len(shape) - 1)), axis=1).reshape(self.inner.shape)
    return x, y, jnp.where(resample[:, None], 0.0, log_w)

  def x_of(self, state, k):
    return state[0]                                                       # the particles [B P, ...]

  def with_x(self, state, k, x):
    return (x,) + tuple(state[1:])

  def denoised_of(self, state):
    return None

  def finish(self, score_fn, state, keys):
    x, _, log_w = state
    x = self.inner.finish(score_fn, (x, x), keys)
    # One particle per sample, drawn by the final weights.
    pick = jax.vmap(lambda kk, lw: jax.random.categorical(jax.random.fold_in(kk, PICK_STREAM), lw))(keys, log_w)
    x = x.reshape((self.shape[0], self.P) + self.shape[1:])[jnp.arange(self.shape[0]), pick]
    return x if self.observed.noisy else self.observed.obs.replace_observed(x, self.observed.y)


def split_options(method: str, algorithm: str, algo_cls, options: dict, methods=None):
  """(method options object, algorithm options object) from one keyword dict: the algorithm's own fields
  (``algo_cls``) and the method's (its options dataclass's, or ``options=`` an instance)."""
  methods = INPAINT_METHODS if methods is None else methods
  if method not in methods:
    raise ValueError(f"method must be one of {list(methods)} with algorithm {algorithm!r}, got {method!r}")
  algo_names = {f.name for f in dataclasses.fields(algo_cls)}
  own = {k: v for k, v in options.items() if k in algo_names}
  rest = {k: v for k, v in options.items() if k not in algo_names}
  if algorithm == "smc" and method == "pc" and not isinstance(rest.get("options"), registry.METHODS["pc"].options):
    rest.setdefault("corrector", "none")                                   # smc moves by the predictor alone
  method_options = rest.pop("options", None)
  try:
    step_options = registry.get_options(method, method_options, **rest)
  except ValueError as e:
    if "unknown option" in str(e):
      valid = sorted(set(registry.sampler_option_names(method)) | algo_names)
      raise ValueError(f"unknown option(s) {sorted(set(rest) - set(registry.sampler_option_names(method)))} for "
                       f"method {method!r} with algorithm {algorithm!r}; valid: {valid}") from None
    raise
  return step_options, algo_cls.build(**own)


def _check_observation(observation: Observation, algorithm: str):
  if algorithm != "smc" and observation.noise_std > 0:
    raise ValueError(f"algorithm {algorithm!r} needs a noise-free observation, got {observation.name!r} with "
                     f"noise_std={observation.noise_std}; use smc, ddrm, pigdm or dps")


def _conditional_sampler(sde: SDE, shape, algorithm: str, method: str, options: dict):
  """``sample(key, score_fn, observed: _Observed) -> (x, nfe)``: the method's stepper and the algorithm's
  wrapper, built here (outside any trace: the grids are computed once), the observation given per call."""
  shape = common.check_shape(shape)
  common.check_choice("algorithm", algorithm, INPAINT_ALGORITHMS)
  step_options, algo = split_options(method, algorithm, ALGORITHM_OPTIONS[algorithm], options)
  if algorithm in ("repaint", "smc") and method != "pc":
    raise ValueError(f"algorithm {algorithm!r} needs method 'pc' (a stochastic reverse transition), got {method!r}")
  if algorithm == "smc":
    if step_options.predictor not in GAUSSIAN_PREDICTORS or step_options.corrector != "none":
      raise ValueError(f"algorithm 'smc' needs predictor in {list(GAUSSIAN_PREDICTORS)} and corrector 'none', got "
                       f"{step_options.predictor!r} and {step_options.corrector!r}")
    if step_options.ladder or step_options.probability_flow:
      raise ValueError("algorithm 'smc' needs ladder=False and probability_flow=False")
    inner = registry.get_stepper(sde, (shape[0] * algo.n_particles,) + shape[1:], method, step_options)
    wrap = lambda observed: SMCStepper(inner, observed, algo.n_particles, algo.ess_threshold)
    nfe_factor = algo.n_particles
  else:
    if method == "pc" and step_options.probability_flow:
      raise ValueError(f"algorithm {algorithm!r} needs probability_flow=False (stochastic steps)")
    inner = registry.get_stepper(sde, shape, method, step_options)
    n_resample = algo.n_resample if algorithm == "repaint" else 1
    wrap = lambda observed: ResampleStepper(inner, observed, n_resample)
    nfe_factor = 1

  ladder = method == "pc" and step_options.ladder        # the discrete chain's own marginals and kernels

  def sample(key: jax.Array, score_fn: ScoreFn, observed: _Observed):
    observed.ladder = ladder
    x, nfe = steps.run(wrap(observed), key, score_fn)
    return x, nfe * nfe_factor                                             # network evaluations per sample

  return sample


def get_conditional_solver(sde: SDE, shape, observation: Observation, algorithm: str, method: str, options: dict):
  """``solve(key, score_fn, y) -> (x [shape], nfe)`` by replacement, RePaint or SMC (``INPAINT_ALGORITHMS``)
  for any linear observation: a projector's own coordinates, else its SVD's (computed here, once)."""
  _check_observation(observation, algorithm)
  sample = _conditional_sampler(sde, shape, algorithm, method, options)
  projector = None if observation.projector else observation.as_projector(tuple(shape))
  return lambda key, score_fn, y: sample(key, score_fn, prepare_observed(sde, observation, y, shape, projector))


def _check_known_and_mask(known, mask, shape):
  """known and mask of the sample shape; a concrete mask must hold only 0 and 1."""
  if tuple(known.shape) != tuple(shape) or tuple(mask.shape) != tuple(shape):
    raise ValueError(f"known and mask must both have the sample shape {tuple(shape)}, "
                     f"got {tuple(known.shape)} and {tuple(mask.shape)}")
  if not isinstance(mask, jax.core.Tracer):
    m = np.asarray(mask)
    if not np.all((m == 0) | (m == 1)):
      raise ValueError("mask must hold only 0 (unknown) and 1 (observed)")


def get_inpainter(sde: SDE, shape, method: str = "pc", algorithm: str = "smc", **options):
  """Builds ``inpaint_fn(key, score_fn, known [shape], mask [shape]) -> (x [shape], nfe)``.

  ``mask`` is 1 where ``known`` is observed; the output equals ``known`` there. The unobserved coordinates are
  drawn from p(x_unknown | known) by ``algorithm`` on the steps of ``method`` (``get_inverse_solver`` with
  ``observation.mask_observation(mask)``; the same options).

  Raises:
    ValueError: as ``get_inverse_solver``; (when called) known and mask not of the sample shape.
  """
  shape = common.check_shape(shape)
  sample = _conditional_sampler(sde, shape, algorithm, method, options)

  def inpaint_fn(key: jax.Array, score_fn: ScoreFn, known: jax.Array, mask: jax.Array):
    _check_known_and_mask(known, mask, shape)
    observation = mask_observation(mask)
    x, nfe = sample(key, score_fn, prepare_observed(sde, observation, observation.forward(known), shape))
    return jnp.where(jnp.asarray(mask, bool), known, x), nfe

  return inpaint_fn


def get_colorizer(sde: SDE, shape, method: str = "pc", algorithm: str = "smc", **options):
  """Builds ``colorize_fn(key, score_fn, grey [B, H, W, 1] or [B, H, W, 3]) -> (x [shape], nfe)``.

  Conditional sampling (``get_inverse_solver``, same options) given the grey level of every pixel
  (``observation.colour_observation``): the output's channel mean equals the input's grey level (for a
  3-channel input, its channel mean). ``shape`` is [B, H, W, 3].

  Raises:
    ValueError: a shape without 3 channels last; (when called) a grey input of the wrong shape.
  """
  shape = common.check_shape(shape)
  if shape[-1] != 3:
    raise ValueError(f"colorization needs RGB samples, shape [B, H, W, 3], got {shape}")
  solve = get_conditional_solver(sde, shape, colour_observation(), algorithm, method, options)

  def colorize_fn(key: jax.Array, score_fn: ScoreFn, grey: jax.Array):
    if tuple(grey.shape) not in (tuple(shape[:-1]) + (1,), tuple(shape)):
      raise ValueError(f"grey must be [B, H, W, 1] or [B, H, W, 3] with B, H, W = {shape[:-1]}, got {tuple(grey.shape)}")
    level = jnp.mean(grey, axis=-1, keepdims=True)
    return solve(key, score_fn, level * math.sqrt(3))                       # y = (r + g + b) / sqrt(3)

  return colorize_fn
