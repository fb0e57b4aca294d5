"""Adaptive-step reverse-SDE sampling (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast", Alg. 1).

Each step pairs an Euler-Maruyama proposal with a stochastic improved-Euler (Heun) one on the same Brownian
increment; their difference, scaled by a mixed tolerance, accepts or rejects the step and sets the next step
size, separately for every sample. diffrax is not used: its adaptive SDE solve needs a ``VirtualBrownianTree``
and a PID controller scaled by atol + rtol |y| over its whole state, not the paper's per-sample
max(atol, rtol max(|x'|, |x'_prev|)), so Algorithm 1 is its own ``lax.while_loop`` here.

Rejected steps: Alg. 1 draws a fresh Brownian increment after a rejection (``rejection="fresh"``). Since the
error estimate grows with the drawn |z|, the accepted increments are then biased towards small ones; in 2-D on
the oracle this moves the mode weights (TV 5-7x the sampling floor on VE, 2.6-3x on rectified flow;
``benchmarks/results/sde_adaptive_gmm.md``). The default ``rejection="bridge"`` keeps the rejected increment
and draws the shorter step's from its Brownian bridge, the remainder kept for the next step (Rackauckas & Nie
2017, RSwM, with one remembered interval), as a fixed-path adaptive solver does.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from samplers import common, steps
from sde_lib import SDE, ScoreFn, batch_broadcast, checks


REJECTIONS = ("bridge", "fresh")
CONTROLS = ("sample", "batch")


@dataclasses.dataclass(frozen=True)
class SDEAdaptiveOptions(checks.Options):
  """Options of ``get_sde_adaptive_sampler``, with their defaults (the paper's, arXiv 2105.14080
  Sec. 3, as in its reference code ``AlexiaJM/score_sde_fast_sampling``).

  rtol: ε_rel of the mixed tolerance (the paper's 0.01; 0.02-0.05 trade quality for speed). atol: ε_abs
  (the paper's 0.0078 = 2/256, one intensity level of images in [-1, 1]; scale it with your data's range).
  t_min: the last time. denoise: Tweedie's step at t_min (1 NFE). h_init: the first step size (0.01). max_steps:
  the most loop iterations (attempted steps of the slowest sample); running out raises. theta: the safety
  factor θ of the step-size update (0.9). r: its exponent (0.9). rejection: the Brownian increment after a
  rejected step, "bridge" (kept and bridged; unbiased) or "fresh" (Alg. 1 as printed; see the module docstring).
  control: whose error sets the step, "sample" (each sample its own t and h: Alg. 1) or "batch" (one t and h for
  the batch, from E over every coordinate of every sample: the whole-state norm of ODE/SDE solvers such as
  diffrax's; the estimate averages over the batch, and the loop stops when the batch does, not at its slowest
  sample's count).
  """

  rtol: float = checks.spec(1e-2, common.POSITIVE_FLOAT)
  atol: float = checks.spec(0.0078, common.POSITIVE_FLOAT)
  t_min: float = checks.spec(1e-3, common.TIME_FLOOR)
  denoise: bool = checks.spec(True, checks.boolean)
  h_init: float = checks.spec(1e-2, common.POSITIVE_FLOAT)
  max_steps: int = checks.spec(4096, checks.integer(1))
  theta: float = checks.spec(0.9, checks.number(0.0, 1.0, open_lo=True))
  r: float = checks.spec(0.9, common.POSITIVE_FLOAT)
  rejection: str = checks.spec("bridge", checks.choice(*REJECTIONS))
  control: str = checks.spec("sample", checks.choice(*CONTROLS))


def _rms(v: jax.Array) -> jax.Array:
  """||v||_2 / sqrt(d) per sample, [B] (Alg. 1's scaled L2 norm: tolerances per coordinate, whatever d)."""
  flat = v.reshape(v.shape[0], -1)
  return jnp.sqrt(jnp.sum(jnp.square(flat), axis=1) / flat.shape[1])


def brownian_increment(h, memory, w_memory, z):
  """The Brownian increment over the next h ([B]) given the remembered interval (length memory [B], increment
  w_memory [B, ...]) that starts where the step does: (dW, the interval left over, its increment).

  h <= memory: the bridge W(h) | W(memory) ~ N(h/L W_L, h (L - h) / L) (Brownian bridge; RSwM, Rackauckas & Nie
  2017 sec. 3); h > memory: W_L + N(0, h - L) (independent increments). No memory (L = 0): sqrt(h) z.
  """
  hb, lb = batch_broadcast(h, z), batch_broadcast(memory, z)
  within = h <= memory
  inside = batch_broadcast(within, z)
  safe = jnp.where(lb > 0, lb, 1.0)
  bridged = hb / safe * w_memory + jnp.sqrt(jnp.maximum(hb * (lb - hb) / safe, 0.0)) * z
  extended = w_memory + jnp.sqrt(jnp.maximum(hb - lb, 0.0)) * z
  dw = jnp.where(inside, bridged, extended)
  return dw, jnp.where(within, memory - h, 0.0), jnp.where(inside, w_memory - dw, 0.0)


def adaptive_step(sde: SDE, score_fn: ScoreFn, state, z, o: SDEAdaptiveOptions):
  """One attempted step of every sample from t to t - h ([B] each). ``state``: (x, x'_prev, t, h, remembered
  interval length [B], its Brownian increment [B, ...]); returns the state after it. Samples with h = 0
  (already at t_min) are left as they are.
  """
  x, x_prev, t, h, memory, w_memory = state
  rsde = sde.reverse(score_fn)
  hb = batch_broadcast(h, x)
  dw, rest, w_rest = brownian_increment(h, memory, w_memory, z)
  # Euler-Maruyama on the reverse SDE (Alg. 1: x' = x - h f + h g^2 s + g dW, dW = sqrt(h) z; Song et al. 2021 eq. 6).
  drift, g = rsde.sde(x, t)
  k1 = -hb * drift + batch_broadcast(g, x) * dw
  x_em = x + k1
  # Stochastic improved Euler with the same dW (Alg. 1: x~'' at (x', t - h); x'' = (x' + x~'') / 2; Roberts 2012).
  drift2, g2 = rsde.sde(x_em, t - h)
  k2 = -hb * drift2 + batch_broadcast(g2, x) * dw
  x_heun = x + 0.5 * (k1 + k2)
  # Mixed tolerance delta = max(atol, rtol max(|x'|, |x'_prev|)) and E = ||(x' - x'') / delta||_2 / sqrt(d) (Alg. 1).
  delta = jnp.maximum(o.atol, o.rtol * jnp.maximum(jnp.abs(x_em), jnp.abs(x_prev)))
  scaled = (x_em - x_heun) / delta
  if o.control == "sample":
    err = _rms(scaled)
  else:                                                   # "batch": one E over every coordinate of every sample
    err = jnp.broadcast_to(_rms(scaled.reshape(1, -1))[0], h.shape)
  moving = h > 0
  accept = (err <= 1.0) & moving
  # Accept with extrapolation: keep the higher-order x'' and remember x' for the next tolerance (Alg. 1).
  a = batch_broadcast(accept, x)
  x, x_prev = jnp.where(a, x_heun, x), jnp.where(a, x_em, x_prev)
  # The Brownian path ahead: the bridge's remainder after an accepted step; after a rejection the whole tried
  # increment ("bridge") or nothing ("fresh": Alg. 1's new draw).
  kept = moving & (o.rejection == "bridge")
  memory = jnp.where(accept, rest, jnp.where(kept, h, 0.0))
  w_memory = jnp.where(a, w_rest, jnp.where(batch_broadcast(kept, x), dw, 0.0))
  last = h >= t - o.t_min                                 # h was capped at t - t_min: land on t_min exactly
  t = jnp.where(accept, jnp.where(last, o.t_min, t - h), t)
  # Next step h = min(t - t_min, theta h E^-r) (Alg. 1; E = 0 asks for the rest of the interval).
  grow = o.theta * h * jnp.power(jnp.maximum(err, jnp.finfo(err.dtype).tiny), -o.r)
  h = jnp.where(moving & (t > o.t_min), jnp.minimum(t - o.t_min, grow), 0.0)
  return x, x_prev, t, h, memory, w_memory


def get_sde_adaptive_sampler(sde: SDE, shape, options: SDEAdaptiveOptions | None = None, **overrides):
  """Samples the reverse SDE from a prior draw at ``sde.t_end`` down to t_min with adaptive steps
  (Jolicoeur-Martineau et al. 2021, Alg. 1; ``SDEAdaptiveOptions``).

  Every attempted step costs 2 score evaluations: Euler-Maruyama x' at (x, t) and improved Euler x'' at
  (x', t - h) with the same Brownian increment; a step is accepted when E = ||(x' - x'') / delta||_2 / sqrt(d)
  <= 1 (delta: the mixed tolerance), and the next step is h = min(t - t_min, theta h E^-r). With
  ``control="sample"`` (the default) each sample has its own t and h (the paper's per-sample steps), its own
  remembered Brownian interval (``rejection``) and its own noise stream (attempt i of sample b draws from
  fold_in(key_b, i + 1)), so a sample does not depend on its batch-mates; the batched ``lax.while_loop`` runs
  until every sample has reached t_min, samples already there idle. With ``control="batch"`` E is taken over
  the whole batch and every sample steps with the same t and h (noise streams stay per sample).

  Returns ``sample_fn(key, score_fn) -> (x [shape], nfe)``: nfe = 2 x the iterations of the batched loop
  (equal to the attempted steps, accepted and rejected, of the slowest sample: the maximum over the batch;
  a faster sample used fewer; with ``control="batch"`` every sample's) + 1 with ``denoise``. An int32 scalar,
  data dependent.

  Raises:
    ValueError: a bad option or shape. At run time, an error when a sample has not reached t_min after
      ``max_steps`` attempts.
  """
  o = SDEAdaptiveOptions.build(options, **overrides)
  shape = common.check_shape(shape)
  t_min = common.check_t_min(sde, o.t_min)
  if t_min >= sde.t_end:
    raise ValueError(f"t_min must be below the SDE's last moving time t_end={sde.t_end}, got {t_min!r}")
  batch = shape[0]

  def sample_fn(key: jax.Array, score_fn: ScoreFn):
    keys = common.per_sample_keys(key, batch)
    x = steps.prior_draw(sde, shape, keys)
    t = common.full_time(sde.t_end, batch)
    h = jnp.minimum(o.h_init, t - t_min)

    def cond(carry):
      i, (_, _, t, _, _, _) = carry
      return (i < o.max_steps) & jnp.any(t > t_min)

    def body(carry):
      i, state = carry
      z = common.per_sample_normal(keys, i + 1, shape)          # stream 0 is the prior draw
      return i + 1, adaptive_step(sde, score_fn, state, z, o)

    init = (x, x, t, h, jnp.zeros_like(t), jnp.zeros_like(x))
    iters, (x, _, t, _, _, _) = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), init))
    x = eqx.error_if(x, jnp.any(t > t_min), f"sde_adaptive: a sample did not reach t_min within max_steps="
                     f"{o.max_steps} attempted steps; raise max_steps or rtol/atol")
    nfe = 2 * iters
    if o.denoise:
      x, nfe = common.tweedie_denoise(sde, score_fn, x, common.full_time(t_min, batch)), nfe + 1
    return x, nfe

  return sample_fn

