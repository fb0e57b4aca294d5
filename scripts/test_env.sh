# Sourced by scripts/test.sh and scripts/test_newest.sh after they make their environment: the JAX settings
# the suite runs under. $1: the environment's python; $2: the persistent compilation cache's directory.
#
# JAX pinned to the CPU. The suite is compile-bound (hundreds of small programs, each compiled once), so XLA
# compiles for speed of compiling, not of running; benchmarks run without these flags:
# - backend (LLVM) optimisation off: ~3x faster compiles for ~1.2x slower runs (measured on
#   tests/test_remat.py and test_samplers.py);
# - XLA:CPU's fusion emitters off (its older loop emitter instead): test_fast_samplers + test_likelihood
#   125 -> 79 s, test_samplers + test_models (not slow) 108 -> 83 s, one full NCSN++ forward's compile
#   11-13 -> 9 s, on one process, 2026-12-06. A JAX that does not know the flag aborts on it, so it is
#   tried first and left out (with a line saying so) where it is not accepted.
# One persistent compilation cache shared by the workers and the main.py runs they start compiles each
# identical program once.
export JAX_PLATFORMS=cpu
TEST_ENV_USER_XLA_FLAGS="${XLA_FLAGS:-}"
export XLA_FLAGS="$TEST_ENV_USER_XLA_FLAGS --xla_backend_optimization_level=0"
if XLA_FLAGS="$XLA_FLAGS --xla_cpu_use_fusion_emitters=false" "$1" -c \
    'import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready()' >/dev/null 2>&1; then
  XLA_FLAGS="$XLA_FLAGS --xla_cpu_use_fusion_emitters=false"
else
  echo "$(basename "$0"): this JAX does not accept --xla_cpu_use_fusion_emitters=false; running without it"
fi
export JAX_COMPILATION_CACHE_DIR="$2"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
