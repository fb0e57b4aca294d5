"""Linear inverse problems y = A x + noise_std eps with an unconditional score model: one entry point,
``get_inverse_solver``, for every algorithm in ``INVERSE_ALGORITHMS`` (docs/inverse_problems.md has each
update rule with its source, and the measured tables).

* ``replacement``, ``repaint``, ``smc`` (``samplers.inpaint``): wrapper steppers around a method's steps, on
  the observation's projector coordinates (a projector's own; otherwise its SVD's, where y observes V^T x
  coordinate by coordinate). replacement and repaint need noise_std = 0; smc takes any noise.
* ``ddrm`` (Kawar et al. 2022, eq. 7-8): its own DDIM-like steps in the SVD's coordinates; ``DDRMStepper``.
* ``pigdm`` (Song et al. 2023, eq. 7-8): a guided score, score + grad_x log N(y; A D(x), r_t^2 A A^T +
  noise_std^2 I), so it runs on every method, the adaptive ODE included.
* ``dps`` (Chung et al. 2023, Alg. 1): after every step of any fixed-grid method, x -= step_size
  grad_x ||y - A D(x)|| at the step's start; ``DPSStepper``.

D(x) = E[x_0 | x_t] is Tweedie's denoiser (``common.tweedie_denoise``). nfe counts network evaluations per
sample: every particle's, and a gradient (dps, pigdm: a forward and a backward pass) as one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samplers import common, inpaint, registry, steps
from samplers.observation import Observation, Spectral
from sde_lib import SDE, ScoreFn, batch_broadcast, checks

DDRM_STREAM = 1 << 22           # fold_in(per-sample key, .): DDRM's noise


@dataclasses.dataclass(frozen=True)
class DDRMOptions(checks.Options):
  """num_steps: network evaluations (the last lands on sigma = 0). eta, eta_b: DDRM's eta (the noise kept in
  each step) and eta_b (the weight of the data in observed coordinates; 1 copies it). t_min: the last level
  before the step to sigma = 0."""

  num_steps: int = checks.spec(20, checks.integer(2))
  eta: float = checks.spec(0.85, checks.number(0.0, 1.0))
  eta_b: float = checks.spec(1.0, checks.number(0.0, 1.0))
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)


@dataclasses.dataclass(frozen=True)
class PiGDMOptions(checks.Options):
  """scale: the weight of the likelihood term added to the score (1: PiGDM; 0: unconditional sampling).
  weighting: "signal" multiplies the term by a(t)^2, the continuous form of the sqrt(alpha_{t-1} alpha_t) that
  weights the guidance in Song et al. 2023, Alg. 1 (1 on VE; near T on VP it damps a term whose Jacobian through
  the network's denoiser, divided by a(T) ~ 0.007, is mostly error: without it a trained VP digits model
  diverges in 7 steps); "none": the bare eq. 7 score."""

  scale: float = checks.spec(1.0, checks.number(0.0))
  weighting: str = checks.spec("signal", checks.choice("signal", "none"))


@dataclasses.dataclass(frozen=True)
class DPSOptions(checks.Options):
  """step_size: DPS's zeta' (Chung et al. 2023, app. C: 1.0 for super-resolution and inpainting on FFHQ); each
  step moves x by step_size along -grad ||y - A D(x)|| (0: unconditional sampling)."""

  step_size: float = checks.spec(1.0, checks.number(0.0))


INVERSE_OPTIONS = {**inpaint.ALGORITHM_OPTIONS, "ddrm": DDRMOptions, "pigdm": PiGDMOptions, "dps": DPSOptions}
INVERSE_ALGORITHMS = tuple(INVERSE_OPTIONS)
# The methods each algorithm runs on (ddrm: its own DDIM-like steps on PC's grid).
INVERSE_METHODS = {"replacement": registry.STEPPER_METHODS, "repaint": ("pc",), "smc": ("pc",), "ddrm": ("pc",),
                   "pigdm": tuple(registry.METHODS), "dps": registry.STEPPER_METHODS}


def _ve(sde: SDE, t):
  """(a(t), sigma(t) = s(t) / a(t)): the scaled variable x / a is the data plus noise of std sigma (VE form)."""
  a, s = sde.marginal_coefs(t)
  return a, s / a


class DDRMStepper:
  """DDRM (Kawar et al. 2022, eq. 7-8) as a ``steps.Stepper``, in z = x / a(t) and the SVD's coordinates
  z_bar = V^T z, y_bar = S^+ U^T y (noise std tau_i = noise_std / s_i), from D's x0_bar = V^T D(x):

      s_i = 0:                 z_bar' = x0_bar + sqrt(1 - eta^2) sigma' (z_bar - x0_bar) / sigma + eta sigma' eps
      sigma' <  tau_i:         z_bar' = x0_bar + sqrt(1 - eta^2) sigma' (y_bar - x0_bar) / tau_i + eta sigma' eps
      sigma' >= tau_i:         z_bar' = (1 - eta_b) x0_bar + eta_b y_bar + sqrt(sigma'^2 - eta_b^2 tau_i^2) eps

  on the levels t_0 = T > ... > t_{N-1} = t_min (uniform in t, as DDIM's skip of DDPM's ladder), then a last
  step to sigma' = 0. The observed coordinates start at y_bar + sqrt(sigma_T^2 - tau_i^2) eps where sigma_T
  >= tau_i; the rest at the prior draw. N network evaluations.
  """

  def __init__(self, sde: SDE, shape, spectral: Spectral, y_bar: jax.Array, noise_std: float, options: DDRMOptions):
    self.sde, self.shape, self.sp, self.y_bar, self.o = sde, shape, spectral, y_bar, options
    self.noise_std = noise_std
    self.t_min = common.check_t_min(sde, options.t_min)
    self.start, self.stop, self.checkpoint = 0, options.num_steps - 1, False
    self.nfe, self.step_nfe = options.num_steps, 1

  def times(self):
    return jnp.linspace(self.sde.t_end, self.t_min, self.o.num_steps)

  def _tau(self):
    return self.sp.noise_levels(self.noise_std, jnp.inf)

  def _eps(self, keys, k):
    return self.sp.vt(inpaint._noise(keys, (DDRM_STREAM, k), self.shape))

  def init(self, score_fn, x, keys):
    a, sigma = _ve(self.sde, jnp.asarray(self.sde.T))
    z = self.sp.vt(x / a)
    tau = self._tau()
    start = self.y_bar + jnp.sqrt(jnp.maximum(sigma**2 - jnp.where(jnp.isfinite(tau), tau, 0.0) ** 2, 0.0)) * self._eps(keys, 0)
    z = jnp.where((self.sp.s > 0) & (sigma >= tau), start, z)
    return a * self.sp.v(z)

  def _update(self, score_fn, x, t, sigma_next, eps):
    batch = self.shape[0]
    tt = common.full_time(t, batch)
    x0 = self.sp.vt(common.tweedie_denoise(self.sde, score_fn, x, tt))
    a, sigma = _ve(self.sde, t)
    z = self.sp.vt(x / a)
    eta, eta_b, tau, y = self.o.eta, self.o.eta_b, self._tau(), self.y_bar
    observed = self.sp.s > 0
    keep = jnp.sqrt(1 - eta**2) * sigma_next
    free = x0 + keep * (z - x0) / sigma + eta * sigma_next * eps
    noisy = x0 + keep * (y - x0) / jnp.where(jnp.isfinite(tau) & (tau > 0), tau, 1.0) + eta * sigma_next * eps
    tau0 = jnp.where(observed, tau, 0.0)
    clean = (1 - eta_b) * x0 + eta_b * y + jnp.sqrt(jnp.maximum(sigma_next**2 - eta_b**2 * tau0**2, 0.0)) * eps
    return jnp.where(~observed, free, jnp.where(sigma_next < tau, noisy, clean))

  def step(self, score_fn, k, x, keys):
    times = self.times()
    a_next, sigma_next = _ve(self.sde, times[k + 1])
    return a_next * self.sp.v(self._update(score_fn, x, times[k], sigma_next, self._eps(keys, k + 1)))

  def x_of(self, state, k):
    return state

  def with_x(self, state, k, x):
    return x

  def denoised_of(self, state):
    return None

  def finish(self, score_fn, x, keys):
    zero = jnp.zeros(())
    return self.sp.v(self._update(score_fn, x, self.times()[self.stop], zero, jnp.zeros_like(self.y_bar)))


class DPSStepper(steps.WrappedStepper):
  """DPS (Chung et al. 2023, Alg. 1) around a method's stepper: each step k -> k + 1 is the method's, then
  x_{k+1} -= step_size grad_{x_k} ||y - A D(x_k)|| (the authors' code steps by the norm's gradient, i.e. Alg.
  1's zeta_i = step_size / ||y - A D(x_k)|| times the squared norm's). One extra network evaluation (with its
  backward pass) per step."""

  def __init__(self, inner, observation: Observation, y: jax.Array, step_size: float):
    super().__init__(inner)
    self.obs, self.y, self.step_size = observation, y, step_size
    self.step_nfe = inner.step_nfe + 1
    self.nfe = inner.nfe + (inner.stop - inner.start)

  def step(self, score_fn, k, state, keys):
    inner, batch = self.inner, self.shape[0]
    x = inner.x_of(state, k)
    t = common.full_time(self.times()[k], batch)

    def residual_norms(x):
      r = self.y - self.obs.forward(common.tweedie_denoise(self.sde, score_fn, x, t))
      return jnp.sum(jnp.sqrt(jnp.sum(jnp.square(r).reshape(batch, -1), axis=1) + 1e-12))   # sum of per-sample norms

    grad = jax.grad(residual_norms)(x)
    nxt = inner.step(score_fn, k, state, keys)
    return inner.with_x(nxt, k + 1, inner.x_of(nxt, k + 1) - self.step_size * grad)


def pigdm_score_fn(sde: SDE, score_fn: ScoreFn, spectral: Spectral, y: jax.Array, noise_std: float,
                   scale: float = 1.0, weighting: str = "signal") -> ScoreFn:
  """score + w(t) scale grad_x log N(y; A D(x), r_t^2 A A^T + noise_std^2 I) with r_t^2 = s^2 / (a^2 + s^2), the
  posterior variance of unit-variance data given x(t) (Song et al. 2023, eq. 7-8), and w = a(t)^2
  (weighting="signal", their Alg. 1's sqrt(alpha_{t-1} alpha_t)) or 1 ("none"). In the SVD's coordinates
  the likelihood's gradient in D is V S (r^2 S^2 + noise_std^2)^-1 (U^T y - S V^T D), pulled back through D by
  one vector-Jacobian product."""
  ut_y = spectral.ut(y)

  def guided(x, t):
    a, s = sde.marginal_coefs(t)
    r2 = batch_broadcast(jnp.square(s) / (jnp.square(a) + jnp.square(s)), ut_y)
    score, pull = jax.vjp(lambda x: score_fn(x, t), x)
    x0 = (x + batch_broadcast(jnp.square(s), x) * score) / batch_broadcast(a, x)     # Tweedie, as tweedie_denoise
    sv = spectral.s
    h = sv * (ut_y - sv * spectral.vt(x0)) / (r2 * jnp.square(sv) + noise_std**2 + (sv == 0))
    g = spectral.v(h)                                     # A^T Sigma^-1 (y - A x0), in sample space
    # grad_x of <g, x0(x)> = (d x0 / d x)^T g = (g + s^2 J_score^T g) / a
    grad = (g + batch_broadcast(jnp.square(s), x) * pull(g)[0]) / batch_broadcast(a, x)
    weight = scale * jnp.square(a) if weighting == "signal" else jnp.full_like(a, scale)
    return score + batch_broadcast(weight, x) * grad

  return guided


def get_inverse_solver(sde: SDE, shape, observation: Observation, algorithm: str = "smc", method: str | None = None,
                       **options):
  """Builds ``solve(key, score_fn, y) -> (x [shape], nfe)``: samples given y = A x + noise_std eps.

  y has the observation's output shape (``observation.forward`` of a batch; [B, m] for
  ``observation_from_matrix``), one observation per sample. ``method`` is the sampler whose steps the
  algorithm uses (``INVERSE_METHODS[algorithm]``; default "pc"; ddrm runs its own steps on PC's uniform time
  grid and takes None or "pc").
  Options: the method's (as ``samplers.get_sampler``'s keywords, or ``options=`` its options object) and the
  algorithm's own (``INVERSE_OPTIONS[algorithm]``). nfe: network evaluations per sample, every particle's and
  every gradient's included.

  The SVD the algorithms need (all but dps, and replacement/repaint/smc on projectors) is computed here, once
  (``Observation.svd``).

  Raises:
    ValueError: an unknown algorithm, method or option, a bad value, a method the algorithm does not run on,
      a noisy observation for replacement or repaint, an operator too large to decompose.
  """
  shape = common.check_shape(shape)
  common.check_choice("algorithm", algorithm, INVERSE_ALGORITHMS)
  if not isinstance(observation, Observation):
    raise ValueError(f"observation must be a samplers.Observation, got {type(observation).__name__}")
  solve = _solver(sde, shape, observation, algorithm, method, options)
  y_shape = tuple(jax.eval_shape(observation.forward, jax.ShapeDtypeStruct(shape, jnp.float32)).shape)

  def checked(key: jax.Array, score_fn: ScoreFn, y: jax.Array):
    if tuple(y.shape) != y_shape:
      raise ValueError(f"y must have the observation's output shape {y_shape} (one row per sample), got {tuple(y.shape)}")
    return solve(key, score_fn, y)

  return checked


def _solver(sde, shape, observation, algorithm, method, options):
  """``get_inverse_solver``'s solve, before the check of y's shape."""
  if algorithm in inpaint.INPAINT_ALGORITHMS:
    method = "pc" if method is None else method
    if method not in INVERSE_METHODS[algorithm]:
      raise ValueError(f"method must be one of {list(INVERSE_METHODS[algorithm])} with algorithm {algorithm!r}, got {method!r}")
    return inpaint.get_conditional_solver(sde, shape, observation, algorithm, method, options)
  if algorithm == "ddrm":
    if method not in (None, "pc"):
      raise ValueError(f"algorithm 'ddrm' runs its own steps on PC's uniform time grid; method must be unset or "
                       f"'pc', got {method!r}")
    o = DDRMOptions.build(options.pop("options", None), **options)
    sp = observation.svd(shape)
    return lambda key, score_fn, y: steps.run(
        DDRMStepper(sde, shape, sp, sp.pseudo_data(y), observation.noise_std, o), key, score_fn)
  method = "pc" if method is None else method
  step_options, algo = inpaint.split_options(method, algorithm, INVERSE_OPTIONS[algorithm], options,
                                             INVERSE_METHODS[algorithm])
  if algorithm == "pigdm":
    sp = observation.svd(shape)
    sample = registry.get_sampler(sde, shape, method, step_options)
    return lambda key, score_fn, y: sample(key, pigdm_score_fn(sde, score_fn, sp, y, observation.noise_std, algo.scale,
                                                                   algo.weighting))
  inner = registry.get_stepper(sde, shape, method, step_options)
  return lambda key, score_fn, y: steps.run(DPSStepper(inner, observation, y, algo.step_size), key, score_fn)
