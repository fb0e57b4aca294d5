"""Entry point: python main.py --config configs/ve/cifar10.py --workdir DIR --mode train|eval|sample

Any config field can be overridden: --config.training.batch_size=64. Errors in the input (a bad
flag, a missing config file, an unknown SDE/model/sampler/data set, a batch size the devices do not
divide, a data set not on disk) end with one line naming the field and exit status 2.
"""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to run.")
flags.DEFINE_string("eval_folder", "eval", "Folder under workdir for the outputs of --mode eval (and of --mode "
                    "sample when given; its default there is 'samples').")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (multi-host runs); without the "
                  "three flags below its arguments are auto-detected (SLURM, Open MPI, TPU pods). README: "
                  "'Several processes and hosts'.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator (jax.distributed.initialize); "
                    "with --num_processes and --process_id, implies --multihost.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.", lower_bound=0)
flags.DEFINE_integer("distributed_timeout", 600, "Seconds a multi-process run waits for the other processes at "
                     "start (jax.distributed.initialize, the CPU device topology exchange) and at shutdown. "
                     "Generous by default: on a busy machine one process can start minutes after another.",
                     lower_bound=1)
flags.DEFINE_string("compilation_cache_dir", None, "Persistent XLA compilation cache: programs compiled once are "
                    "read back on later runs instead of compiled again. "
                    "Default $XDG_CACHE_HOME/score_sde_jax/xla (~/.cache/...); '' turns it off; "
                    "JAX_COMPILATION_CACHE_DIR in the environment wins.")

_DISTRIBUTED = ("coordinator_address", "num_processes", "process_id")


def _distributed_args() -> dict | None:
  """The arguments of jax.distributed.initialize: {} for auto-detection (--multihost alone), the three
  flags when given, None for a single-process run. Partial or inconsistent flags end with one error line."""
  given = [name for name in _DISTRIBUTED if getattr(FLAGS, name) is not None]
  if not given:
    return {} if FLAGS.multihost else None
  if len(given) < len(_DISTRIBUTED):
    missing = ", ".join(f"--{name}" for name in _DISTRIBUTED if name not in given)
    _fail(f"{missing} missing: --coordinator_address, --num_processes and --process_id go together "
          f"(or give none of them with --multihost for auto-detection)")
  if not FLAGS.process_id < FLAGS.num_processes:
    _fail(f"--process_id={FLAGS.process_id} must be < --num_processes={FLAGS.num_processes}")
  host, _, port = FLAGS.coordinator_address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    _fail(f"--coordinator_address={FLAGS.coordinator_address!r} must be HOST:PORT (e.g. 10.0.0.1:1234)")
  return {name: getattr(FLAGS, name) for name in _DISTRIBUTED}


def _initialize_distributed(jax, kwargs: dict, timeout: int) -> None:
  """jax.distributed.initialize(**kwargs) with every start-up and shutdown wait set to ``timeout``
  seconds, then (CPU) the cross-process collectives connected at once.

  On CPU, cross-process collectives need an implementation (gloo, the default of jax 0.10; set here
  when unset, as in older jax, and an explicit mpi is kept). Timeouts: ``initialization_timeout``
  and ``shutdown_timeout_seconds`` of jax.distributed.initialize, and the CPU client's topology
  exchange (``jax_cpu_get_local/global_topology_timeout_minutes``). Gloo's own rendezvous, when a
  group of devices first runs a collective, waits 30 s and has no setting (XLA's GlooCollectives
  never sets the gloo context's timeout; jax's ``make_gloo_tcp_collectives`` takes none): a
  process still compiling its train step 30 s after another reached the step's all-reduce killed
  the run (issue 22). So the collectives are connected here, while the processes are in step
  (``jax.devices()`` returns once every process has joined the topology exchange): an all-reduce
  over the training mesh and ``sync_global_devices`` (one device per process: process_allgather's
  and orbax's barriers). XLA keeps a group's connection for the whole process (a 2-process training
  run opens no other gloo connection after these), and a collective on a connected group waits for
  its peers far longer than 30 s (measured: 130 s)."""
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  minutes = -(-timeout // 60)
  jax.config.update("jax_cpu_get_local_topology_timeout_minutes", minutes)
  jax.config.update("jax_cpu_get_global_topology_timeout_minutes", minutes + 1)   # must exceed the local one
  jax.distributed.initialize(**kwargs, initialization_timeout=timeout, shutdown_timeout_seconds=timeout)
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    _connect_cpu_collectives(jax)


def _connect_cpu_collectives(jax) -> None:
  """Runs one tiny collective on each device group the run uses (see _initialize_distributed)."""
  import numpy as np
  from jax.experimental import multihost_utils
  from jax.sharding import NamedSharding, PartitionSpec

  from training.step import make_mesh

  mesh = make_mesh()
  ones = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")),
                                                np.ones(jax.local_device_count(), np.int32))
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)
  if int(total.addressable_data(0)) != jax.device_count():
    raise RuntimeError(f"all-reduce over {jax.device_count()} devices gave {int(total.addressable_data(0))}")
  multihost_utils.sync_global_devices("main.py: collectives connected")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse(argv):
  try:
    rest = FLAGS(argv)
    config = FLAGS.config
    if config is not None:
      config.to_dict()                            # a failed load surfaces only when the config is read
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except Exception as e:  # a missing file, or a config file that does not import
    given = [a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
             if a.split("=", 1)[0] == "--config" and ("=" in a or i + 1 < len(argv))]
    path = given[-1] if given else "?"                # the last --config wins, as in absl
    if isinstance(e, OSError):
      _fail(f"--config: cannot load the config file {path!r} (missing, or it does not import)")
    if isinstance(e, (AttributeError, KeyError)):
      _fail(f"--config: no field {str(e).strip(chr(34))} in the config: overrides must name existing fields")
    _fail(f"--config: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
  if config is None:
    _fail("--config is required (e.g. --config configs/ve/digits.py)")
  if not FLAGS.workdir:
    _fail("--workdir is required")
  if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):
    _fail(f"--workdir {FLAGS.workdir!r} is a file, not a directory")
  return rest


def _typed_config(config):
  """The typed boundary (schema.parse_config): every bad field ends here, before any work."""
  from schema import parse_config

  try:
    return parse_config(config)
  except ValueError as e:
    _fail(str(e).splitlines()[0])


def main(argv):
  del argv
  distributed = _distributed_args()
  config = _typed_config(FLAGS.config)
  from training import runtime

  cache = FLAGS.compilation_cache_dir
  runtime.configure(runtime.default_cache_dir() if cache is None else cache)   # before JAX's first computation
  import jax

  from data_lib.images import DatasetNotFoundError
  from training.train import NonFiniteLossError

  if distributed is not None:
    _initialize_distributed(jax, distributed, FLAGS.distributed_timeout)
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING)     # orbax's per-file INFO lines drown the run's own
  try:
    if FLAGS.mode == "train":
      from training.train import train
      train(config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
      from training.evaluate import evaluate
      evaluate(config, FLAGS.workdir, FLAGS.eval_folder)
    else:
      from training.evaluate import sample
      sample(config, FLAGS.workdir, FLAGS.eval_folder if FLAGS["eval_folder"].present else "samples")
  except (ValueError, DatasetNotFoundError, OSError, NonFiniteLossError) as e:
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
