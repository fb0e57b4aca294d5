"""Process-level settings main.py applies before JAX starts: XLA:CPU options and the compilation cache.

The CPU options are measured in benchmarks/networks/networks_vs_reference.py: they make our NCSN++ and
DDPM++ faster on XLA:CPU (the same functions up to float32 rounding). The persistent cache stores each
compiled program (a CIFAR-10 train step compiles for about a minute on 2 cores) so that later runs of
the same program read it back instead of compiling it again.
"""

from __future__ import annotations

import os

# XLA:CPU options (DebugOptions fields). YNNPACK fusions off: XLA:CPU (jaxlib 0.10) hands convolutions,
# dots and reductions to YNNPACK by default; its convolution-filter gradients ran at about half the rate
# of its forward convolutions (jax.profiler on DDPM++), and with it off (Eigen's convolutions) both
# networks ran faster, forward (0.82x / 0.84x the time) and forward + backward (0.91x / 0.86x). Machine-
# dependent: on a faster day the CIFAR-10 train step was 1.14x slower with it off, the digits step 0.92x
# (benchmarks/cpu_options.py); kept for the digits default, the workload CPUs run here.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/score_sde_jax/xla (~/.cache/... when unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "score_sde_jax", "xla")


def cpu_xla_flags(existing: str) -> str:
  """``existing`` XLA_FLAGS plus CPU_OPTIONS as flags, except options the user already set there."""
  flags = existing.split()
  given = {f.split("=", 1)[0].lstrip("-") for f in flags}
  flags += [f"--{name}={value}" for name, value in CPU_OPTIONS.items() if name not in given]
  return " ".join(flags)


def configure(cache_dir: str | None) -> None:
  """Applies CPU_OPTIONS (through XLA_FLAGS: call before JAX's first computation; they only touch the CPU
  backend) and the persistent compilation cache at ``cache_dir`` ("" or None: off). A cache directory
  set in the environment (JAX_COMPILATION_CACHE_DIR) wins over ``cache_dir``."""
  os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""))
  import jax

  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or not cache_dir:
    return
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
