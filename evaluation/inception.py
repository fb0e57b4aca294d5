"""Inception-v3 pool features and logits for FID, KID and the Inception score, in Flax.

The network is the "FID Inception": TensorFlow's 2015-12-05 Inception-v3 graph used by the original
FID and IS code, as ported to PyTorch by pytorch-fid (mseitzer/pytorch-fid, ``inception.py``: the
torchvision Inception3 layout with 1008 classes, average pools that ignore padding, and a max pool
in the last block). Our module names follow that state dict, so its weights load by name.

Weights cannot be downloaded at run time. Get ``pt_inception-2015-12-05-6726825d.pth`` (URL below)
and point ``eval.inception_path`` at it: it is read by ``safeio.torch_pickle`` (no torch needed, nothing
in the file is executed, every size checked), or convert it once to a numpy archive::

    python -m tools.convert_inception pt_inception-2015-12-05-6726825d.pth inception_fid.npz
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299          # the graph's input resolution; images are resized bilinearly to it
NUM_CLASSES = 1008        # the 2015 graph's softmax (1000 ImageNet classes plus 8 unused)
POOL_FEATURES = 2048      # "pool_3": the 2048-d global average pool used by FID and KID
BN_EPSILON = 1e-3         # TensorFlow's batch-norm epsilon in this graph

HOW_TO_GET = (f"Inception-v3 weights cannot be downloaded at run time: download {WEIGHTS_URL} and set "
              "eval.inception_path to it (or to an .npz made by `python -m tools.convert_inception IN.pth "
              "OUT.npz`)")
MAX_WEIGHTS_BYTES = 1 << 30   # the FID Inception's weights take 95 MB


class BasicConv(nn.Module):
  """Convolution (no bias), batch norm (running statistics), ReLU: torchvision's BasicConv2d."""

  features: int
  kernel: Sequence[int]
  strides: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, tuple(self.kernel), strides=self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_same(x):
  # TensorFlow's 3x3 average pool (stride 1, SAME) averages only the unpadded entries.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride: int = 2, pad: int = 0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  max_pool_branch: bool = False     # the graph's last block max-pools here (pytorch-fid's FIDInceptionE_2)

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = _max_pool(x, stride=1, pad=1) if self.max_pool_branch else _avg_pool_same(x)
    bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception-v3: images [B, H, W, C] in [0, 1] (C = 1 or 3) -> {"pool": [B, 2048], "logits": [B, 1008]}.

  Images are resized bilinearly to ``resize_to`` (299 for FID; any size >= 75 runs) and mapped to [-1, 1].
  """

  resize_to: int = INPUT_SIZE

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (self.resize_to, self.resize_to):
      # Half-pixel bilinear without antialiasing: torch's interpolate(align_corners=False) in pytorch-fid.
      x = jax.image.resize(x, (x.shape[0], self.resize_to, self.resize_to, 3), "bilinear", antialias=False)
    x = 2.0 * x - 1.0
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    return {"pool": pool, "logits": nn.Dense(NUM_CLASSES, name="fc")(pool)}


# --- weights ------------------------------------------------------------------------------------------

def variables_from_state_dict(state_dict: dict) -> dict:
  """Flax variables {"params", "batch_stats"} from a pytorch-fid state dict {dotted name: array}.

  Convolution kernels OIHW -> HWIO, the dense kernel [out, in] -> [in, out]; batch-norm weight/bias
  -> scale/bias, running_mean/var -> batch_stats mean/var; num_batches_tracked is dropped.
  """
  params, stats = {}, {}
  for name, value in state_dict.items():
    value = np.asarray(value, np.float32)
    *path, layer, kind = name.split(".")
    if kind == "num_batches_tracked":
      continue
    if layer == "conv" and kind == "weight":
      tree, leaf, value = params, "kernel", value.transpose(2, 3, 1, 0)
    elif layer == "bn" and kind in ("weight", "bias"):
      tree, leaf = params, {"weight": "scale", "bias": "bias"}[kind]
    elif layer == "bn" and kind in ("running_mean", "running_var"):
      tree, leaf = stats, {"running_mean": "mean", "running_var": "var"}[kind]
    elif not path and layer == "fc" and kind in ("weight", "bias"):
      tree, leaf = params, {"weight": "kernel", "bias": "bias"}[kind]
      value = value.T if kind == "weight" else value
    else:
      raise ValueError(f"unexpected entry {name!r} in the Inception state dict (not pytorch-fid's FID Inception?)")
    for part in path + [layer]:
      tree = tree.setdefault(part, {})
    tree[leaf] = value
  return {"params": params, "batch_stats": stats}


def state_dict_from_variables(variables: dict) -> dict:
  """The inverse of ``variables_from_state_dict`` (pytorch layout, numpy arrays): used to write tests' weights."""
  out = {}

  def walk(tree, prefix, collection):
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(value, prefix + [key], collection)
        continue
      layer, value = prefix[-1], np.asarray(value)
      base = ".".join(prefix)
      if collection == "batch_stats":
        out[f"{base}.running_{key}"] = value
      elif layer == "conv":
        out[f"{base}.weight"] = value.transpose(3, 2, 0, 1)
      elif layer == "bn":
        out[f"{base}.{'weight' if key == 'scale' else 'bias'}"] = value
      else:                                                     # fc
        out[f"{base}.{'weight' if key == 'kernel' else 'bias'}"] = value.T if key == "kernel" else value

  walk(variables["params"], [], "params")
  walk(variables["batch_stats"], [], "batch_stats")
  return out


def read_state_dict(path: str) -> dict:
  """{name: numpy array} from a ``.npz`` archive or a pytorch ``.pth`` file (either torch.save format),
  read as untrusted data: no pickle, at most ``MAX_WEIGHTS_BYTES`` of arrays.

  Raises:
    CheckpointError (a ValueError): a malformed file or anything but a dict of names to arrays.
  """
  from safeio.torch_pickle import load_pth
  from safeio.untrusted import CheckpointError, read_npz

  if path.endswith(".npz"):
    state = read_npz(path, MAX_WEIGHTS_BYTES)
  else:
    state = load_pth(path)
  if not isinstance(state, dict) or not all(type(k) is str and isinstance(v, np.ndarray) for k, v in state.items()):
    raise CheckpointError(f"{path}: not a state dict of names to arrays (pytorch-fid's FID Inception weights)")
  return state


def load_variables(path: str) -> dict:
  """Flax variables of the FID Inception from ``path`` (.npz or .pth), checked against the architecture.

  Raises:
    FileNotFoundError: no file at ``path`` (the message says how to obtain the weights).
    ValueError: a missing, extra or mis-shaped entry.
  """
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"eval.inception_path={path!r}: no such file. {HOW_TO_GET}")
  variables = variables_from_state_dict(read_state_dict(path))
  expected = jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
  got = jax.tree_util.tree_flatten_with_path(variables)[0]
  want = jax.tree_util.tree_flatten_with_path(expected)[0]
  if [p for p, _ in got] != [p for p, _ in want]:
    missing = {jax.tree_util.keystr(p) for p, _ in want} ^ {jax.tree_util.keystr(p) for p, _ in got}
    raise ValueError(f"eval.inception_path={path!r}: entries differ from the FID Inception: {sorted(missing)[:5]}")
  for (p, v), (_, w) in zip(got, want):
    if v.shape != w.shape:
      raise ValueError(f"eval.inception_path={path!r}: {jax.tree_util.keystr(p)} has shape {v.shape}, "
                       f"expected {w.shape}")
  return jax.tree.map(jnp.asarray, variables)


def count_parameters() -> int:
  """Trainable parameters of the FID Inception (convolutions, batch-norm scale/bias, fc): 23,850,960."""
  shapes = jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(shapes["params"]))


class InceptionFeatures:
  """Pool features and logits of images through the FID Inception, in jitted batches.

  ``InceptionFeatures(path)`` loads weights from ``path``; ``InceptionFeatures(variables=...)`` takes
  them directly (tests use random ones).
  """

  def __init__(self, path: str | None = None, *, variables: dict | None = None, batch_size: int = 100,
               resize_to: int = INPUT_SIZE):
    self.variables = load_variables(path) if variables is None else variables
    self.batch_size = int(batch_size)
    model = InceptionV3(resize_to=resize_to)
    self._apply = jax.jit(lambda v, x: model.apply(v, x))

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pool features [N, 2048], logits [N, 1008]) of images [N, H, W, C] in [0, 1].

    The last batch is padded to the batch size, so one compiled program serves every call."""
    images = np.asarray(images, np.float32)
    n, pools, logits = len(images), [], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out = self._apply(self.variables, chunk)
      pools.append(np.asarray(out["pool"])[:len(chunk) - pad])
      logits.append(np.asarray(out["logits"])[:len(chunk) - pad])
    return np.concatenate(pools), np.concatenate(logits)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """Inception score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016): mean and std over ``splits``
  equal parts of logits [N, K] (at most N parts); p(y) is each part's mean prediction."""
  logits = np.asarray(logits, np.float64)
  if len(logits) == 0:
    raise ValueError("inception_score needs at least one sample")
  splits = max(1, min(int(splits), len(logits)))
  logp = logits - logits.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  scores = []
  for part in np.array_split(logp, splits):
    p = np.exp(part)
    log_marginal = np.log(p.mean(0) + 1e-30)
    scores.append(np.exp(np.mean(np.sum(p * (part - log_marginal), axis=1))))
  return float(np.mean(scores)), float(np.std(scores))
