# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # score-sde-jax: a tutorial on a 2-D Gaussian mixture
#
# This notebook walks through score-based generative modelling with SDEs (Song et al., ICLR 2021) with
# this library, on data whose every density is known exactly: a 2-D Gaussian mixture (the "oracle",
# `data_lib.GaussianMixture`). We look at the perturbed densities $p_t$, train a small score network,
# sample it with three samplers, compute exact likelihoods, generate conditionally, and finally load a
# converted score_sde checkpoint.
#
# **Running it.** It imports the installed library (`pip install -e .` in the repository), so it runs
# from any folder. Open it with `jupytext --to ipynb notebooks/tutorial.py` (or open the `.py` in Jupyter
# with jupytext installed), or run it as a script, `python notebooks/tutorial.py`, which saves the figures
# as PNG files in `./tutorial_figures` (or `$TUTORIAL_FIGURES`). `TUTORIAL_SMALL=1` shrinks every size so
# that the whole notebook runs in about 2 minutes on 2 busy CPU cores (1 minute of CPU time); the default sizes
# (about twice that) give nicer pictures. Times are in `notebooks/README.md`.
#
# **The checkpoint of section 6** is a small seeded score_sde_pytorch checkpoint committed with the tests
# (`tests/reference/data`). The notebook looks for the repository in this order: the folder named by
# `$SCORE_SDE_JAX_ROOT`, the folder above this file (when run as a script), the current folder and its
# parents, and the folder the installed library lives in (an editable install is the repository itself).

# %%
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:
  matplotlib.use("Agg")                      # a script: draw off-screen and save PNG files
import matplotlib.pyplot as plt  # noqa: E402

import models  # noqa: E402
import samplers  # noqa: E402
import sde_lib  # noqa: E402
from data_lib import example_mixture  # noqa: E402

SMALL = os.environ.get("TUTORIAL_SMALL") == "1"
TRAIN_STEPS = 800 if SMALL else 3000         # optimiser steps of section 2 (batches of 1,024)
N_SAMPLES = 1024 if SMALL else 4096          # samples per sampler (section 3)
PC_STEPS = 200 if SMALL else 500             # predictor steps of the PC sampler
N_TEST = 128 if SMALL else 512               # test points of the likelihood (section 4)
N_COND = 512 if SMALL else 2048              # conditional samples (section 5)
INPAINT_STEPS = 100 if SMALL else 200        # their PC steps
PARTICLES = 16                               # SMC particles per conditional sample
GRID = 80 if SMALL else 160                  # pixels per side of the density pictures
FIGURE_DIR = os.environ.get("TUTORIAL_FIGURES", "tutorial_figures")
RESULTS = {"small": SMALL}                   # the numbers the notebook demonstrates, printed at the end


def show(fig, name):
  """Shows a figure inline in a notebook; saves it as FIGURE_DIR/name.png in a script."""
  if IN_NOTEBOOK and "TUTORIAL_FIGURES" not in os.environ:
    plt.show()
  else:
    os.makedirs(FIGURE_DIR, exist_ok=True)
    path = os.path.join(FIGURE_DIR, f"{name}.png")
    fig.savefig(path, dpi=80)
    print(f"saved {path}")
    if IN_NOTEBOOK:
      plt.show()
  plt.close(fig)


def find_fixture_dir(name="pytorch_r_ncsnpp_residual"):
  """tests/reference/data of the repository, found as the first cell explains (None if absent)."""
  roots = [os.environ.get("SCORE_SDE_JAX_ROOT")]
  if "__file__" in globals():
    roots.append(Path(__file__).resolve().parent.parent)
  roots += [Path.cwd(), *Path.cwd().parents, Path(models.__file__).resolve().parent.parent]
  for root in filter(None, roots):
    folder = Path(root) / "tests" / "reference" / "data"
    if (folder / f"{name}.pth").is_file():
      return folder
  return None


print(f"jax {jax.__version__} on {jax.devices()[0].platform}; sizes: {'small' if SMALL else 'default'}")

# %% [markdown]
# ## 1. The oracle and its perturbed densities
#
# A linear SDE $dx = f(t)\,x\,dt + g(t)\,dw$ perturbs data with the Gaussian kernel
# $x_t \mid x_0 \sim \mathcal N(a(t)\,x_0,\ s(t)^2 I)$, so data from a mixture
# $p_0 = \sum_k w_k \mathcal N(\mu_k, \Sigma_k)$ stay a mixture at every time:
# $$p_t(x) = \sum_k w_k\, \mathcal N\big(x;\ a(t)\mu_k,\ a(t)^2\Sigma_k + s(t)^2 I\big).$$
# VE keeps $a = 1$ and grows $s(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t$; VP shrinks
# $a(t) = e^{-\frac12\int_0^t\beta}$ with $s^2 = 1 - a^2$ (Song et al. 2021). The oracle gives
# $\log p_t$ and the score $\nabla_x \log p_t$ exactly; below, the colour is $\log p_t$ and the arrows
# the score's direction.

# %%
mixture = example_mixture(2)              # modes at (+-4, +-4), weights .5 / .25 / .15 / .10
ve, vp = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0), sde_lib.VPSDE(beta_min=0.1, beta_max=20.0)
times = (0.0, 0.1, 0.3, 1.0)

fig, axes = plt.subplots(2, len(times), figsize=(3.2 * len(times), 6.6), layout="constrained")
for row, (name, sde) in enumerate((("VE", ve), ("VP", vp))):
  for col, t in enumerate(times):
    a, s = (float(v[0]) for v in sde.marginal_coefs(jnp.array([t])))
    half = 6.0 * a + 3.0 * s                           # the data's extent shrunk by a(t), plus 3 noise stds
    u = jnp.linspace(-half, half, GRID)
    pts = jnp.stack([c.ravel() for c in jnp.meshgrid(u, u)], axis=1)
    logp = mixture.log_prob_perturbed(pts, a, s).reshape(GRID, GRID)
    ax = axes[row, col]
    ax.imshow(jnp.maximum(logp, logp.max() - 12.0), origin="lower", extent=(-half, half, -half, half), cmap="magma")
    q = jnp.linspace(-half, half, 13)[1:-1]
    qp = jnp.stack([c.ravel() for c in jnp.meshgrid(q, q)], axis=1)
    score = mixture.score_perturbed(qp, a, s)
    score = score / (jnp.linalg.norm(score, axis=1, keepdims=True) + 1e-12)
    ax.quiver(qp[:, 0], qp[:, 1], score[:, 0], score[:, 1], color="white", alpha=0.7, scale=20, width=0.006)
    ax.set_title(f"{name}  t={t:g}  a={a:.3g}  s={s:.3g}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Exact log p_t of the mixture under VE (top) and VP (bottom), and the direction of its score")
show(fig, "1_perturbed_densities")

# %% [markdown]
# ## 2. Training a small score network
#
# We fit the library's `MLP` to the score of VP-perturbed data with denoising score matching: since
# $\nabla_{x_t}\log p_{0t}(x_t\mid x_0) = -z/s(t)$ for $x_t = a(t)x_0 + s(t)z$, the loss
# $$J(\theta) = \mathbb E_{t\sim U(\epsilon,1)}\,\mathbb E_{x_0, z}
#   \Big[\lambda(t)\,\big\|s_\theta(x_t, t) + z/s(t)\big\|^2\Big], \qquad \lambda(t) = s(t)^2,$$
# differs from $\mathbb E\,\lambda\|s_\theta - \nabla\log p_t\|^2$ by a constant (Vincent 2011), so the exact
# score minimises it ($\epsilon = 10^{-5}$). `sde_lib.get_loss_fn` builds $J$ for any score function;
# `models.get_score_fn` turns the network into one (on VP the network predicts $z$ and the score is
# $-\text{output}/s(t)$). The
# training set is 8,192 exact samples; the optimiser is optax's Adam with a cosine schedule, and we keep an
# exponential moving average (EMA) of the parameters, as score_sde does.

# %%
sde = vp
train_x = mixture.sample(jax.random.key(1), 8192)
net = models.MLP(hidden=128, depth=3)
apply_fn = models.make_apply_fn(net)
params = models.init_params(net, jax.random.key(0), (1024, 2))
loss_fn = sde_lib.get_loss_fn(sde, reduce_mean=True)           # DSM, lambda(t) = s(t)^2, t ~ U(1e-5, 1)
optimizer = optax.adam(optax.cosine_decay_schedule(5e-3, TRAIN_STEPS, alpha=0.05))
EMA_RATE = 0.99 if SMALL else 0.999


def score_of(params):
  """The score function s_theta(x [B, 2], t [B]) of the network with these parameters."""
  return models.get_score_fn(sde, apply_fn, params)


@jax.jit
def train_step(params, ema, opt_state, step, key):
  batch_key, loss_key = jax.random.split(key)
  x = train_x[jax.random.randint(batch_key, (1024,), 0, train_x.shape[0])]
  loss, grads = jax.value_and_grad(lambda p: loss_fn(loss_key, score_of(p), x))(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, models.ema_update(ema, params, EMA_RATE, step + 1), opt_state, loss


start = time.time()
init_params, ema, opt_state, losses = params, params, optimizer.init(params), []
for step in range(TRAIN_STEPS):
  params, ema, opt_state, loss = train_step(params, ema, opt_state, step, jax.random.fold_in(jax.random.key(2), step))
  losses.append(float(loss))
print(f"{TRAIN_STEPS} steps in {time.time() - start:.1f} s (compilation included)")

# The exact score's loss is the minimum of J (Vincent's identity); compare on one large batch, same noise.
eval_x, eval_key = mixture.sample(jax.random.key(3), 16384), jax.random.key(4)
eval_loss = jax.jit(lambda p: loss_fn(eval_key, score_of(p), eval_x))
loss_exact = float(loss_fn(eval_key, mixture.score_fn(sde), eval_x))
loss_init, loss_trained = float(eval_loss(init_params)), float(eval_loss(ema))
print(f"DSM loss on 16,384 held-out points: untrained {loss_init:.4f}, trained (EMA) {loss_trained:.4f}, "
      f"exact score {loss_exact:.4f}")
RESULTS["loss"] = {"untrained": loss_init, "trained": loss_trained, "exact": loss_exact}

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
smooth = np.convolve(losses, np.ones(25) / 25, mode="valid")
ax.plot(losses, alpha=0.3, label="batch loss")
ax.plot(np.arange(len(smooth)) + 24, smooth, label="moving average (25 steps)")
ax.axhline(loss_exact, color="k", ls="--", label="exact score (the minimum, in expectation)")
ax.set_xlabel("step")
ax.set_ylabel("DSM loss")
ax.set_ylim(loss_exact - 0.08, loss_exact + 0.3)
ax.legend()
show(fig, "2_training_loss")
params = ema                                               # sample with the EMA weights from here on

# %% [markdown]
# ## 3. Sampling: predictor-corrector, the probability-flow ODE, DPM-Solver++
#
# All samplers integrate the reverse-time SDE (Anderson 1982)
# $dx = [f(t)x - g(t)^2 \nabla_x \log p_t(x)]\,dt + g(t)\,d\bar w$ from the prior at $t = 1$, or its
# probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla_x\log p_t(x)$, which has the same marginals
# (Song et al. 2021). `get_sampler(sde, shape, method)` returns `sample_fn(key, score_fn) -> (x, nfe)`:
# `"pc"` alternates a reverse-diffusion predictor with a Langevin corrector, `"ode"` solves the ODE
# adaptively with diffrax, and `"dpm_solver_pp"` (Lu et al. 2022) is a multistep ODE solver that takes an
# exact budget of score evaluations, `nfe=20`. The oracle's `mode_metrics` assigns each sample to its
# nearest mode and compares the modes' frequencies (`tv`, total variation from the weights), means and
# spreads with the truth; the *floor* is the 99th percentile of the same metrics over 200 sets of exact
# samples of the same size, i.e. what sampling noise alone gives. Running a sampler once more with the
# oracle's exact score separates the sampler's error from the network's. What to look for: every sampler
# puts the right mass on each mode; a small network's errors show in the spreads of the small modes, and
# most at 20 evaluations.

# %%
floor = mixture.metric_floor(jax.random.key(7), N_SAMPLES)
exact = np.asarray(mixture.sample(jax.random.key(8), N_SAMPLES))
print(f"floor ({N_SAMPLES} exact samples, 99%): " + ", ".join(f"{k} {v:.3f}" for k, v in floor.items()))
RESULTS["floor"] = floor
RESULTS["sampling"] = {}
runs = {"pc": dict(num_steps=PC_STEPS), "ode": dict(rtol=1e-3, atol=1e-3), "dpm_solver_pp": dict(nfe=20)}
drawn = {}
for method, options in runs.items():
  sample_fn = samplers.get_sampler(sde, (N_SAMPLES, 2), method, **options)
  start = time.time()
  x, nfe = jax.jit(lambda key, p: sample_fn(key, score_of(p)))(jax.random.key(9), params)
  drawn[method] = x = np.asarray(x)
  metrics = mixture.mode_metrics(x)
  RESULTS["sampling"][method] = {"nfe": int(nfe), **metrics}
  print(f"{method:>14}: NFE {int(nfe):4d}  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        + f"   ({time.time() - start:.1f} s with compilation)")

# The same 20-step solver driven by the oracle's exact score: what the sampler alone gets wrong.
sample_fn = samplers.get_sampler(sde, (N_SAMPLES, 2), "dpm_solver_pp", nfe=20)
x, nfe = jax.jit(lambda key: sample_fn(key, mixture.score_fn(sde)))(jax.random.key(9))
metrics = mixture.mode_metrics(np.asarray(x))
RESULTS["sampling"]["dpm_solver_pp_exact_score"] = {"nfe": int(nfe), **metrics}
print(f"{'dpm_solver_pp':>14}: NFE {int(nfe):4d}  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
      + "   (the exact score)")

fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), sharex=True, sharey=True, layout="constrained")
for ax, (name, x) in zip(axes, [("exact samples", exact)] + list(drawn.items())):
  ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
  nfe = "" if name == "exact samples" else f", NFE {RESULTS['sampling'][name]['nfe']}"
  ax.set_title(f"{name}{nfe}")
  ax.set_aspect("equal")
axes[0].set_xlim(-7, 7)
axes[0].set_ylim(-7, 7)
fig.suptitle(f"{N_SAMPLES} samples of the trained network against exact samples of the mixture")
show(fig, "3_samples")

# %% [markdown]
# ## 4. Exact likelihoods through the probability-flow ODE
#
# Along the ODE $dx/dt = \tilde f(x, t)$ the log-density changes by the divergence (instantaneous change
# of variables, Chen et al. 2018), so integrating from the data at $t_{\min}$ to the latent $z = x(1)$,
# $$\log p_{t_{\min}}(x) = \log p_1(z) + \int_{t_{\min}}^{1} \nabla\!\cdot \tilde f(x(t), t)\,dt.$$
# `get_likelihood_fn` evaluates it with the prior $\mathcal N(0, I)$ in place of $p_1$; in 2-D the divergence
# is computed exactly (`divergence="exact"`; images use Hutchinson's estimate). With the oracle's exact
# score the result equals the oracle's $\log p_{t_{\min}}$ up to solver error and the *prior mismatch*
# $\log p_1(z) - \log\mathcal N(z; 0, I)$. With the trained network it is the exact log-density of the
# model's own distribution $q$, and by Gibbs' inequality $\mathbb E_{p}[\log q] \le \mathbb E_p[\log p]$: the
# gap is the KL divergence $\mathrm{KL}(p\,\|\,q) \ge 0$. As a yardstick we give the KL of the best single
# Gaussian (the one with the mixture's mean and covariance). Units: nats per point; bits/dim is
# $-\log q / (D \ln 2)$ (a continuous density, so it can be negative; image bits/dim add a dequantisation
# term, `samplers.bits_per_dim`).

# %%
T_MIN = 1e-5
test_x = mixture.sample(jax.random.key(10), N_TEST)
likelihood_fn = samplers.get_likelihood_fn(sde, rtol=1e-5, atol=1e-5, t_min=T_MIN, divergence="exact")
log_p = np.asarray(mixture.log_prob_t(test_x, jnp.full((N_TEST,), T_MIN), sde), np.float64)   # exact log p_tmin

# With the exact score: solver error and prior mismatch, told apart.
logp_oracle, z, nfe_oracle = jax.jit(likelihood_fn, static_argnums=1)(jax.random.key(11), mixture.score_fn(sde), test_x)
mismatch = np.asarray(mixture.log_prob_t(z, jnp.ones(N_TEST), sde) - sde.prior_logp(z), np.float64)
solver_error = np.asarray(logp_oracle, np.float64) + mismatch - log_p
print(f"exact score: NFE {int(nfe_oracle)}, solver error {np.mean(np.abs(solver_error)):.1e} nats on average "
      f"(largest {np.max(np.abs(solver_error)):.1e}), prior mismatch {mismatch.mean():.1e} nats on average")

# With the trained network. Its ODE takes more steps at a given tolerance; 1e-4 keeps the solver error far
# below the standard error of the KL estimate below.
model_likelihood_fn = samplers.get_likelihood_fn(sde, rtol=1e-4, atol=1e-4, t_min=T_MIN, divergence="exact")
logq, _, nfe_model = jax.jit(lambda key, p, x: model_likelihood_fn(key, score_of(p), x))(jax.random.key(11), params,
                                                                                        test_x)
logq = np.asarray(logq, np.float64)
gap = log_p - logq                                   # its mean estimates KL(p || q) >= 0
kl, kl_se = gap.mean(), gap.std(ddof=1) / math.sqrt(N_TEST)
w, mu, cov = (np.asarray(v, np.float64) for v in (mixture.weights, mixture.means, mixture.covs))
mean = w @ mu
gauss_cov = np.einsum("k,kde->de", w, cov + np.einsum("kd,ke->kde", mu, mu)) - np.outer(mean, mean)
log_gauss = np.asarray(jax.scipy.stats.multivariate_normal.logpdf(test_x, mean, gauss_cov), np.float64)
kl_gauss = float(np.mean(log_p - log_gauss))
dims = test_x.shape[1]
print(f"trained network: NFE {int(nfe_model)}; mean log-likelihood {logq.mean():.3f} nats "
      f"({-logq.mean() / (dims * math.log(2)):.3f} bits/dim), exact {log_p.mean():.3f} nats "
      f"({-log_p.mean() / (dims * math.log(2)):.3f} bits/dim)")
print(f"KL(p || model) = {kl:.3f} +- {kl_se:.3f} nats; KL(p || best Gaussian) = {kl_gauss:.3f} nats")
RESULTS["likelihood"] = {"solver_error_mean": float(np.mean(np.abs(solver_error))), "dims": dims,
                         "solver_error_max": float(np.max(np.abs(solver_error))),
                         "prior_mismatch": float(mismatch.mean()), "kl": float(kl), "kl_se": float(kl_se),
                         "kl_gauss": kl_gauss, "logq_mean": float(logq.mean()), "logp_mean": float(log_p.mean())}

fig, ax = plt.subplots(figsize=(4.6, 4.4), layout="constrained")
ax.scatter(log_p, logq, s=6, label="trained network")
ax.scatter(log_p, np.asarray(logp_oracle), s=6, marker="x", label="exact score")
lims = [min(log_p.min(), logq.min()) - 0.5, max(log_p.max(), logq.max()) + 0.5]
ax.plot(lims, lims, "k--", lw=1)
ax.set_xlabel("exact log p (oracle), nats")
ax.set_ylabel("probability-flow ODE log-likelihood, nats")
ax.legend()
ax.set_title("Likelihood of test points")
show(fig, "4_likelihood")

# %% [markdown]
# ## 5. Conditional generation: inpainting a coordinate
#
# Write a point as $x = (u, v)$. Observe $u = 3.5$ and sample $v$ from $p(v \mid u)$ with the
# *unconditional* network. The oracle knows the answer: conditioning a Gaussian mixture gives a mixture
# (`GaussianMixture.condition`), here two modes near $v = -4$ and $v = +3.7$ whose weights Bayes' rule
# moves from the prior 0.25 / 0.10 (relative 0.71 / 0.29) by
# $w_k' \propto w_k\,\mathcal N(u; \mu_{k,u}, \Sigma_{k,uu})$.
# score_sde's `replacement` method overwrites the observed coordinate with a noised copy after every step;
# it ignores how likely the observation is under each mode, so its weights are off. Sequential Monte Carlo
# (`smc`, Dou & Song 2024) weights particles by how well they predict the observation and converges to
# the exact conditional as particles grow; it costs `PARTICLES` times the network evaluations. Run once more
# with the oracle's exact score, SMC shows what the algorithm does without the network's errors (the upper
# mode at $u = 3.5$ lies in the tail of the training data, where a small network is least accurate).

# %%
OBSERVED = 3.5
known = jnp.zeros((N_COND, 2)).at[:, 0].set(OBSERVED)
mask = jnp.zeros((N_COND, 2)).at[:, 0].set(1.0)
posterior = mixture.condition(np.array([True, False]), np.array([OBSERVED, 0.0]))   # p(v | u): 1-D, 4 modes
print("exact conditional weights of the four modes:", np.array2string(np.asarray(posterior.weights), precision=3))
target = posterior.restrict([1, 3])           # the two modes at u = +4 (the others weigh < 1e-20)
cond_floor = target.metric_floor(jax.random.key(12), N_COND)
RESULTS["conditional"] = {"floor_tv": cond_floor["tv"], "weights": np.asarray(target.weights).tolist()}
completions = {}
runs = (("replacement", {}, "network"), ("smc", {"n_particles": PARTICLES}, "network"),
        ("smc", {"n_particles": PARTICLES}, "exact score"))
for algorithm, options, source in runs:
  inpaint_fn = samplers.get_inpainter(sde, (N_COND, 2), "pc", algorithm, num_steps=INPAINT_STEPS, corrector="none",
                                      **options)
  if source == "network":
    x, nfe = jax.jit(lambda key, p: inpaint_fn(key, score_of(p), known, mask))(jax.random.key(13), params)
  else:
    x, nfe = jax.jit(lambda key: inpaint_fn(key, mixture.score_fn(sde), known, mask))(jax.random.key(13))
  x = np.asarray(x)
  label = f"{algorithm}, {source}"
  completions[label] = x[:, 1]
  metrics = target.mode_metrics(x[:, 1:])
  share = float(np.mean(x[:, 1] > 0))
  RESULTS["conditional"][label] = {"nfe": int(nfe), "tv": metrics["tv"], "upper_share": share,
                                   "observed_kept": bool(np.all(x[:, 0] == OBSERVED))}
  print(f"{label:>24}: NFE {int(nfe):5d}, share of the upper mode {share:.3f} (exact "
        f"{float(target.weights[1]):.3f}), tv {metrics['tv']:.3f} (floor {cond_floor['tv']:.3f})")

fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(2, 1), layout="constrained")
u = jnp.linspace(-6.5, 6.5, 400)[:, None]
ax.plot(u[:, 0], np.exp(np.asarray(target.log_prob(u))), "k", lw=2, label=f"exact p(v | u = {OBSERVED})")
for label, x1 in completions.items():
  ax.hist(x1, bins=80, range=(-6.5, 6.5), density=True, histtype="step", lw=1.5, label=label)
ax.set_xlabel("$v$")
ax.legend(fontsize=8)
ax.set_title(f"Completions of $v$ given $u$ = {OBSERVED}")
labels = list(completions)
bars.bar(range(len(labels)), [RESULTS["conditional"][k]["upper_share"] for k in labels], color=["C0", "C1", "C2"])
bars.axhline(float(target.weights[1]), color="k", lw=2, label="exact")
w_prior = np.asarray(mixture.weights)
bars.axhline(w_prior[3] / (w_prior[1] + w_prior[3]), color="gray", ls=":", label="prior (ignores $u$)")
bars.set_xticks(range(len(labels)), [k.replace(", ", "\n") for k in labels], fontsize=8)
bars.set_ylim(0, 1)
bars.set_title("weight of the upper mode")
bars.legend(fontsize=8)
show(fig, "5_inpainting")

# %% [markdown]
# ## 6. A converted score_sde checkpoint
#
# `models.load_score_sde_checkpoint(path, config)` reads score_sde_pytorch's `.pth` files (and score_sde's
# flax checkpoints) without torch and as untrusted data, and returns this library's parameters (EMA weights by
# default); `models.score_fn_from_config(config, params)` is then a score function like any other, for
# images NHWC. No published checkpoint can be downloaded here, so we load the seeded checkpoint the tests use:
# a reduced NCSN++ (VE SDE, $16\times16\times3$) whose weights are random but which was written by
# score_sde_pytorch's own code, together with the score its own network computed. Its converted score
# matches that reference; the samples are noise, because the weights were never trained. With a real
# checkpoint, use the config file of the table in the README (e.g. `configs/ve/cifar10.py`).

# %%
from schema import parse_config  # noqa: E402

fixtures = find_fixture_dir()
if fixtures is None:
  print("tests/reference/data not found: set SCORE_SDE_JAX_ROOT to the repository to run this section")
else:
  with np.load(fixtures / "pytorch_r_ncsnpp_residual.npz") as f:
    reference = {k: f[k] for k in f.files}
  config = parse_config(json.loads(str(reference["config"])))  # the reference's config, in score_sde's layout
  ckpt_params = models.load_score_sde_checkpoint(str(fixtures / "pytorch_r_ncsnpp_residual.pth"), config)
  ckpt_sde = sde_lib.get_sde(config)
  n_params = models.count_params(models.get_model(config), (1, 16, 16, 3))
  print(f"{config.model.name} with {n_params:,} parameters, {ckpt_sde}")

  def ckpt_score_of(params):
    """score_fn(x [B, 16, 16, 3] in [0, 1], t [B]) of the converted network."""
    return models.score_fn_from_config(config, params)

  ours = jax.jit(lambda p, x, t: ckpt_score_of(p)(x, t))(ckpt_params, reference["x"], reference["t"])
  ref = reference["score_ema"]                               # score_sde_pytorch's own score, EMA weights
  rel_error = float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))
  print(f"max |ours - score_sde_pytorch| / max |score_sde_pytorch| = {rel_error:.1e}")
  image_sampler = samplers.get_sampler(ckpt_sde, (4, 16, 16, 3), "dpm_solver_pp", nfe=10)
  images, nfe = jax.jit(lambda key, p: image_sampler(key, ckpt_score_of(p)))(jax.random.key(14), ckpt_params)
  images = np.asarray(images)
  RESULTS["checkpoint"] = {"rel_error": rel_error, "shape": list(images.shape), "nfe": int(nfe),
                           "finite": bool(np.all(np.isfinite(images)))}
  print(f"drew {images.shape[0]} samples of shape {images.shape[1:]} with {int(nfe)} NFE")
  fig, axes = plt.subplots(1, 4, figsize=(8, 2.4), layout="constrained")
  for ax, image in zip(axes, images):
    ax.imshow(np.clip(image, 0.0, 1.0))                      # data range [0, 1] (config.data.centered = False)
    ax.axis("off")
  fig.suptitle("Samples of the seeded (untrained) checkpoint: noise, as expected")
  show(fig, "6_checkpoint_samples")

# %% [markdown]
# ## Summary
#
# The numbers this notebook demonstrated (the repository's `tests/test_tutorial.py` runs it at small sizes and
# checks them).

# %%
print("RESULTS " + json.dumps(RESULTS))
