"""Statistics of a data set for choosing the noise scales, and its FID reference statistics.

    python -m tools.data_stats --config configs/ve/digits.py [--config.data.path=...] [--max_examples N] [--out FILE]

Reads the configured data set's training split (FOLDER, ARRAY, DIGITS or a tensorflow-datasets set) as
the model sees it (data.image_size, data.num_channels, data.centered; not flipped, not dequantised)
and prints the number of examples, the image shape, the largest pairwise Euclidean distance between
training examples, and the noise scales it suggests for the VE SDE:

* sigma_max ~ that distance: Song & Ermon (2020), "Improved techniques for training score-based
  generative models", technique 1 ("initial noise scale"): the largest noise level should be as large
  as the maximum Euclidean distance between all pairs of training data points, so that sampling
  from the noisiest level can reach every mode.
* sigma_min: technique 1 only asks it to be small; score_sde uses 0.01 for images in [0, 1], so the
  suggestion is 0.01 x the width of the model's data range (0.02 for centred data in [-1, 1]).
* the geometric ladder between them (technique 2), for the discrete NCSN ladder and annealed Langevin.

The distance is exact (a blocked numpy computation) over at most 5,000 examples (fewer for large
images: at most 2^28 values in memory); beyond that it is computed on a seeded subsample, and says so
(a lower bound of the full set's maximum).

With ``--config.eval.inception_path`` pointing to the FID Inception weights it also writes the FID
reference statistics of the split (mu [2048], sigma [2048, 2048], kid_features [K, 2048]: the layout
and file name ``evaluation.scorers.InceptionScorer`` caches in WORKDIR/eval/, so a copy there is reused by
evaluation). Errors in the input end with one ``error:`` line and exit status 2.

The config file is read through absl's ``config_flags`` (as main.py reads it), not
``schema.load_config_file``: that is what gives the ``--config.FIELD=VALUE`` overrides.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np

EXACT_LIMIT = 5000          # pairwise distances over at most this many examples ...
MAX_VALUES = 2**28          # ... holding at most this many float32 values (1 GiB) ...
SUBSAMPLE_SEED = 0          # ... else over a subsample drawn with this seed
BLOCK = 512                 # rows per block of the pairwise computation
SIGMA_MIN_UNIT = 0.01       # score_sde's sigma_min for images in [0, 1]


# ------------------------------------------------------------------------------------ numerics
def max_pairwise_distance(x: np.ndarray, block: int = BLOCK) -> tuple[float, tuple[int, int]]:
  """The largest Euclidean distance between two rows of x [N, D], and the pair (i, j) attaining it.

  Blocked over rows (memory O(block x N)): squared distances |a|^2 + |b|^2 - 2 a.b from float32 Gram
  blocks pick each row's farthest partner, whose distance is then recomputed exactly in float64.
  """
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  n = len(x)
  if n < 2:
    return 0.0, (0, 0)
  sq = np.einsum("nd,nd->n", x.astype(np.float64), x.astype(np.float64))
  best, pair = -1.0, (0, 0)
  for start in range(0, n, block):
    rows = np.arange(start, min(start + block, n))
    d2 = sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T).astype(np.float64)
    cols = np.argmax(d2, axis=1)
    exact = np.sum((x[rows].astype(np.float64) - x[cols].astype(np.float64)) ** 2, axis=1)
    k = int(np.argmax(exact))
    if exact[k] > best:
      best, pair = float(exact[k]), (int(rows[k]), int(cols[k]))
  return math.sqrt(best), tuple(sorted(pair))


def round_up(value: float, digits: int = 2) -> float:
  """``value`` > 0 rounded up to ``digits`` significant figures (43.21 -> 44, 4.0 -> 4.0)."""
  scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
  return math.ceil(round(value / scale, 9)) * scale


def geometric_ratio(dim: int) -> float | None:
  """Song & Ermon (2020), technique 2: the ratio gamma of a geometric noise ladder in dimension ``dim``
  with Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = 1/2 (bisection);
  None when sqrt(2D) <= 3, where the condition has no such root (D < 5)."""
  root = math.sqrt(2.0 * dim)
  if root <= 3.0:
    return None
  phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
  overlap = lambda g: phi(root * (g - 1) + 3 * g) - phi(root * (g - 1) - 3 * g)
  lo, hi = 1.0, 2.0
  while overlap(hi) > 0.5:
    hi *= 2.0
  for _ in range(100):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if overlap(mid) > 0.5 else (lo, mid)
  return lo


def suggest(max_distance: float, centered: bool, dim: int) -> dict:
  """Suggested VE noise scales: sigma_max (technique 1, rounded up to 2 significant figures),
  sigma_min (0.01 x the data range's width), and technique 2's ladder ratio and length (or None)."""
  width = 2.0 if centered else 1.0
  sigma_min = SIGMA_MIN_UNIT * width
  sigma_max = max(round_up(max_distance), 2.0 * sigma_min) if max_distance > 0 else 2.0 * sigma_min
  gamma = geometric_ratio(dim)
  levels = math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma)) + 1 if gamma else None
  return dict(sigma_max=float(sigma_max), sigma_min=float(sigma_min), data_range=(-1.0 if centered else 0.0, 1.0),
              ladder_ratio=gamma, ladder_levels=levels)


# ---------------------------------------------------------------------------------- the data set
def training_split(config):
  """The training split as the model sees it: in order, not flipped, not dequantised (an ImageData).

  Raises:
    ValueError: the toy GMM (not an image data set), or any get_dataset error.
    DatasetNotFoundError: the data is not on disk.
  """
  from data_lib.images import get_dataset, is_image_data

  if not is_image_data(config.data):
    raise ValueError(f"data.dataset={config.data.dataset}: tools.data_stats reads image data sets (FOLDER, ARRAY, "
                     f"DIGITS, CIFAR10, ...); the toy GMM has its noise scales in configs/toy")
  data = get_dataset(config.data, "train", evaluation=True, seed=int(config.seed))
  return dataclasses.replace(data, dequantize=False)


def data_statistics(config, max_examples: int = 0) -> dict:
  """Number of examples, shape, the largest pairwise distance (exact or on a seeded subsample) and the
  suggested noise scales of config's training split; ``max_examples`` > 0 uses only its first examples."""
  data = training_split(config)
  total = len(data)
  used = min(max_examples or total, total)
  shape = tuple(int(s) for s in data.examples([0]).shape[1:])
  dim = int(np.prod(shape))
  limit = max(2, min(EXACT_LIMIT, MAX_VALUES // dim))
  if used <= limit:
    indices, subsampled = np.arange(used), False
  else:
    indices, subsampled = np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(used, limit, replace=False)), True
  x = np.concatenate([data.examples(indices[i:i + BLOCK]).reshape(-1, dim) for i in range(0, len(indices), BLOCK)])
  distance, (i, j) = max_pairwise_distance(x)
  return dict(examples=total, used=used, shape=shape, dim=dim, centered=bool(data.centered),
              max_distance=distance, pair=(int(indices[i]), int(indices[j])), compared=len(indices),
              subsampled=subsampled, **suggest(distance, bool(data.centered), dim))


def reference_file_name(config, max_examples: int) -> str:
  """The name evaluation caches the training split's FID reference statistics under (with
  eval.fid_reference_split="train" and eval.fid_reference_examples=max_examples)."""
  from evaluation.scorers import reference_file_name as cached_name

  return cached_name(config.data.dataset, "train", max_examples)


def write_fid_reference(config, max_examples: int, out: str) -> int:
  """Inception pool-feature statistics of the first ``max_examples`` training examples (0: all) written
  to ``out`` as evaluation lays them out (``evaluation.scorers.save_reference_statistics``): mu [2048],
  sigma [2048, 2048], kid_features [min(N, eval.kid_reference_examples), 2048]. Returns the number of examples."""
  from evaluation import InceptionFeatures, to_unit_range
  from evaluation.scorers import save_reference_statistics

  extractor = InceptionFeatures(config.eval.inception_path, batch_size=int(config.eval.inception_batch_size))
  data = training_split(config)
  used = min(max_examples or len(data), len(data))
  step = int(config.eval.batch_size)
  feats = np.concatenate([extractor(to_unit_range(data.examples(range(s, min(s + step, used))), data.centered))[0]
                          for s in range(0, used, step)])
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  save_reference_statistics(out, feats, int(config.eval.kid_reference_examples))
  return used


def report(config, stats: dict) -> list[str]:
  """The readable lines of ``stats`` (data_statistics)."""
  h, w, c = stats["shape"]
  lo, hi = stats["data_range"]
  lines = [f"data set: {config.data.dataset}"
           + (f" ({config.data.path})" if str(config.data.dataset).upper() in ("FOLDER", "ARRAY") else "")
           + f", training split: {stats['examples']:,} examples of {h}x{w}x{c} (D = {stats['dim']:,}), "
           f"model range [{lo:g}, {hi:g}]"]
  where = (f"on a seeded subsample of {stats['compared']:,} of {stats['used']:,} examples (a lower bound)"
           if stats["subsampled"] else f"exact, over the first {stats['compared']:,} of {stats['examples']:,} examples"
           if stats["used"] < stats["examples"] else f"exact, over all {stats['compared']:,} examples")
  lines.append(f"max pairwise distance: {stats['max_distance']:.4f} ({where}; examples {stats['pair'][0]} and "
               f"{stats['pair'][1]})")
  lines.append(f"sigma_max = {stats['sigma_max']:g}  (Song & Ermon 2020, technique 1: ~ the largest pairwise distance)")
  lines.append(f"sigma_min = {stats['sigma_min']:g}  (technique 1 only asks for a small one: score_sde's 0.01 for "
               f"[0, 1] images x the range width {hi - lo:g})")
  if stats["ladder_ratio"]:
    lines.append(f"noise ladder (technique 2; the discrete NCSN ladder, annealed Langevin): ratio "
                 f"{stats['ladder_ratio']:.4f}, {stats['ladder_levels']} levels from sigma_max to sigma_min")
  overrides = f"--config.model.sigma_max={stats['sigma_max']:g} --config.model.sigma_min={stats['sigma_min']:g}"
  note = "" if config.sde.name == "vesde" else (
      f" (VE SDE only; training.sde={config.sde.name} sets its noise by model.beta_min / beta_max)")
  lines.append(f"overrides: {overrides}{note}")
  return lines


# ------------------------------------------------------------------------------- command line
def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Configuration file (its data section is read).",
                                  lock_config=True)
  flags.DEFINE_integer("max_examples", 0, "Use the first N training examples (0: the whole split).", lower_bound=0)
  flags.DEFINE_string("out", "", "FID reference-statistics file (default: the name evaluation caches it "
                      "under, in the current directory); written only with eval.inception_path set.")
  return flags.FLAGS


def _parse(argv):
  """absl flags and the config file, as main.py parses them; bad input ends with one ``error:`` line."""
  from absl import flags

  flag_values = flags.FLAGS
  try:
    rest = flag_values(argv)
    config = flag_values.config
    if config is not None:
      config.to_dict()
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except OSError:
    given = [a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
             if a.split("=", 1)[0] == "--config" and ("=" in a or i + 1 < len(argv))]
    _fail(f"--config: cannot load the config file {given[-1] if given else '?'!r} (missing, or it does not import)")
  except (AttributeError, KeyError) as e:
    _fail(f"--config: no field {str(e).strip(chr(34))} in the config: overrides must name existing fields")
  except Exception as e:  # a config file that does not import
    _fail(f"--config: {(str(e).splitlines() or [type(e).__name__])[0]}")
  if config is None:
    _fail("--config is required (e.g. --config configs/ve/digits.py --config.data.dataset=FOLDER "
          "--config.data.path=DIR)")
  if len(rest) > 1:
    _fail(f"unexpected arguments {rest[1:]}: flags are --config, --config.FIELD=VALUE, --max_examples, --out")
  return rest


def main(argv) -> None:
  del argv
  from absl import flags

  from data_lib.images import DatasetNotFoundError
  from schema import parse_config

  flag_values = flags.FLAGS
  try:
    config = parse_config(flag_values.config)
    stats = data_statistics(config, flag_values.max_examples)
    for line in report(config, stats):
      print(line)
    if not config.eval.inception_path:
      print("FID reference statistics: not written; they need the FID Inception weights "
            "(--config.eval.inception_path=FILE, see evaluation/inception.py and tools/convert_inception.py)")
      return
    out = flag_values.out or reference_file_name(config, flag_values.max_examples)
    used = write_fid_reference(config, flag_values.max_examples, out)
    print(f"FID reference statistics of {used:,} examples: {out} (mu, sigma, kid_features); evaluation reuses "
          f"it as WORKDIR/eval/{reference_file_name(config, flag_values.max_examples)} (eval.fid_reference_split="
          f"train, eval.fid_reference_examples={flag_values.max_examples})")
  except (ValueError, DatasetNotFoundError, OSError) as e:
    _fail((str(e).splitlines() or [type(e).__name__])[0])


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main, flags_parser=_parse)
