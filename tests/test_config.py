"""The typed configuration boundary: every config file parses, every field it sets is read, every bad
value is caught at the boundary with one line naming the field."""

import copy
import dataclasses
import glob
import importlib
import math
import os
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

import models
import samplers
import schema as config_lib
from schema import parse_config, track_reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "configs", "*", "*.py")) if not f.endswith("__init__.py"))


def _module(path):
  return os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")


def _leaves(d, prefix=""):
  out = set()
  for k, v in d.items():
    path = f"{prefix}.{k}" if prefix else k
    out |= _leaves(v, path) if isinstance(v, dict) else {path}
  return out


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_module)
def test_every_config_file_parses(path):
  config = parse_config(importlib.import_module(_module(path)).get_config())
  assert config.sampling.method in samplers.METHODS
  models.get_model(config)                      # the network builds from its typed hyperparameters


# Tiny runs of the two kinds of small config (an image U-Net, a toy MLP): train, evaluate, sample.
TINY = {
    "configs.vp.digits": dict(model=dict(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()),
                              eval=dict(num_samples=4, batch_size=4, bpd_max_examples=2, bpd_rtol=1e-2, bpd_atol=1e-2,
                                        enable_bpd=True, begin_ckpt=1, end_ckpt=1)),
    "configs.toy.ve": dict(model=dict(hidden=16, depth=1, nf=8),
                           eval=dict(num_samples=64, batch_size=64, bpd_max_examples=8, bpd_rtol=1e-2, bpd_atol=1e-2,
                                     begin_ckpt=1, end_ckpt=1)),
}
TINY_TRAINING = dict(batch_size=16, n_iters=2, snapshot_freq=2, snapshot_freq_for_preemption=1, log_freq=1,
                     eval_freq=1, snapshot_samples=4)


def _tiny(name):
  config = importlib.import_module(name).get_config()
  config.training.update(TINY_TRAINING)
  for section, values in TINY[name].items():
    config[section].update(values)
  config.sampling.pc.num_steps = 3
  return config


@pytest.mark.slow
def test_every_field_a_config_file_sets_is_read(tmp_path):
  """Fields read by train + eval + sample of the small configs (and by the sampler of every method)
  cover every field any config file sets: nothing is defined and then ignored."""
  from training.evaluate import evaluate, sample
  from training.train import train

  consumed = set()
  for name in TINY:
    raw = _tiny(name)
    config = parse_config(raw)
    workdir = str(tmp_path / name)
    with track_reads() as reads:
      train(config, workdir)
      evaluate(config, workdir)
      sample(config, workdir)
    consumed |= reads
    if name == "configs.vp.digits":                 # --mode sample completing test images: sampling.inpaint
      for algorithm in ("smc", "repaint"):
        variant = copy.deepcopy(raw)
        variant.sampling.condition, variant.sampling.inpaint.algorithm = "inpaint", algorithm
        variant.sampling.method = "pc"               # the inpainter's steps: pc or dpm_solver_pp
        with track_reads() as reads:
          sample(parse_config(variant), workdir)
        consumed |= reads
      variant = copy.deepcopy(raw)                   # --mode sample solving y = A x + noise: sampling.inverse
      variant.sampling.update(condition="inverse", method="pc")
      variant.sampling.inverse.update(operator="mask", algorithm="smc")
      with track_reads() as reads:
        sample(parse_config(variant), workdir)
      consumed |= reads
      for operator in samplers.OPERATORS:            # ... its other operators' parameters and algorithms' options
        for algorithm in samplers.INVERSE_ALGORITHMS:
          variant.sampling.inverse.update(operator=operator, algorithm=algorithm)
          typed = parse_config(variant)
          with track_reads() as reads:
            config_lib.observation_arguments(typed)
            config_lib.inverse_arguments(typed)
          consumed |= reads
      variant = copy.deepcopy(raw)                   # a class-conditional network: --mode sample's condition=class
      variant.model.num_classes, variant.sampling.condition, variant.sampling.guidance_scale = 10, "class", 2.0
      with track_reads() as reads:
        train(parse_config(variant), workdir + "_class")
        sample(parse_config(variant), workdir + "_class")
      consumed |= reads
      # A noise-conditional classifier (train, eval), then classifier guidance of the unconditional model; the
      # classifier's config file (read by sampling.classifier_config) is the digits one at the tiny size.
      tiny_file = tmp_path / "tiny_classifier.py"
      tiny_file.write_text("from configs.vp.digits_classifier import get_config as full\n\n\ndef get_config():\n"
                           "  config = full()\n  config.model.update(nf=8, ch_mult=(1,), num_res_blocks=1)\n"
                           f"  config.training.update({TINY_TRAINING!r})\n  return config\n")
      classifier = importlib.import_module("configs.vp.digits_classifier").get_config()
      classifier.training.update(TINY_TRAINING)
      classifier.model.update(nf=8, ch_mult=(1,), num_res_blocks=1)
      classifier.eval.update(begin_ckpt=1, end_ckpt=1)
      variant = copy.deepcopy(raw)
      variant.sampling.update(condition="class", classifier_config=str(tiny_file),
                              classifier_workdir=workdir + "_classifier")
      with track_reads() as reads:
        train(parse_config(classifier), workdir + "_classifier")
        evaluate(parse_config(classifier), workdir + "_classifier")
        sample(parse_config(variant), workdir)
      consumed |= reads
    for method in samplers.METHODS:                 # each method's section is read when it is the method
      variant = copy.deepcopy(raw)
      variant.sampling.method = method
      typed = parse_config(variant)
      with track_reads() as reads:
        method, options = config_lib.sampler_options(typed)
        samplers.get_sampler(*_sde_and_shape(typed), method, options)
      consumed |= reads
  assert "model.network" in consumed
  for path in CONFIG_FILES:
    raw = importlib.import_module(_module(path)).get_config().to_dict()
    network = parse_config(raw).model.network
    present = {SECTION_OF.get(p, p) for p in _leaves(raw)
               if not (p.startswith("model.") and p.split(".", 1)[1] in network)}
    unread = sorted(present - consumed - ALLOWED_UNREAD)
    assert not unread, f"{_module(path)} sets fields nothing reads: {unread}"


# score_sde's flat fields -> the typed section's field that reads them.
SECTION_OF = {f"{src}.{field}": f"{dst}.{name}" for (src, field), (dst, name) in config_lib.sections.SCORE_SDE_FIELDS.items()}


def _sde_and_shape(config):
  import sde_lib
  from data_lib.images import data_shape
  return sde_lib.get_sde(config), (2,) + data_shape(config.data)


# Fields the tiny runs cannot reach, each read elsewhere (and tested there).
ALLOWED_UNREAD = {
    "data.data_dir",          # tensorflow-datasets directory: tests/test_pipeline.py (mock CIFAR-10)
    "data.category",          # LSUN's tfds config
    "eval.inception_path",    # the FID Inception: tests/test_pipeline.py with random weights
    "eval.inception_batch_size", "eval.fid_reference_split", "eval.fid_reference_examples",
    "eval.kid_reference_examples",
}


# ------------------------------------------------------------------------------ bad values
def _invalid_values(check):
  """Values the schema says are invalid for a field with this check."""
  kind, b = check.kind, getattr(check, "bounds", {})
  zero_is_default = b.get("optional")        # num_steps = 0 in a config file: the method's default
  if kind == "int":
    out = ["x", 1.5, float("nan")]
    if b["lo"] is not None and not (zero_is_default and b["lo"] - 1 == 0):
      out.append(b["lo"] - 1)
    if b["hi"] is not None:
      out.append(b["hi"] + 1)
    return out
  if kind == "float":
    out = ["x", float("nan"), True]
    if not b["allow_inf"]:
      out.append(float("inf"))
    if b["lo"] is not None and not (zero_is_default and b["open_lo"] and b["lo"] == 0):
      out.append(b["lo"] if b["open_lo"] else b["lo"] - 1)
    if b["hi"] is not None:
      out.append(b["hi"] if b["open_hi"] else b["hi"] + 1)
    return out
  if kind == "bool":
    return ["x", 2]
  if kind == "choice":
    return ["no-such-choice"]
  return [5]


def _schema_fields():
  """(section path, field name, check) for every checked field of the typed config."""
  out = []
  sections = {"training": config_lib.Training, "sampling": config_lib.Sampling, "eval": config_lib.Eval,
              "data": config_lib.Data, "model": config_lib.Model, "optim": config_lib.Optim,
              "sde": config_lib.Sde, "score": config_lib.Score, "ema": config_lib.Ema,
              "sampling.inpaint": config_lib.Inpaint, "sampling.inverse": config_lib.Inverse}
  for where, cls in sections.items():
    for f in dataclasses.fields(cls):
      if "check" in f.metadata:
        out.append((where, f.name, f.metadata["check"]))
  for m in samplers.METHODS:
    out += [(f"sampling.{m}", f.name, f.metadata["check"]) for f in config_lib.config_fields(m)]
  return out


NETWORK_INVALID = {int: [0, -1, "x", 2.5, float("nan")], float: [float("nan"), "x", -1.0], bool: ["x", 3],
                   str: ["no-such-choice", 5], tuple: ["x", (0,), (-2, 1)]}


def _network_cases():
  out = []
  for f in dataclasses.fields(models.NCSNpp):
    if f.name in ("parent", "name", "centered"):
      continue
    kind = type(f.default)
    values = list(NETWORK_INVALID[kind])
    if kind is str and f.name not in models.NCSNpp.CHOICES:
      continue
    if kind is float and f.name not in models.NCSNpp.RANGES:
      values = [v for v in values if not (isinstance(v, float) and v == -1.0)]
    if kind is int and models.NCSNpp.RANGES.get(f.name, (1,))[0] == 0:
      values = [v for v in values if v != 0]          # zero is valid (num_classes = 0: unconditional)
    if kind is tuple and f.name in models.NCSNpp.NONEMPTY:
      values.append(())
    out += [("model", f.name, v) for v in values]
  return out


def _cases():
  cases = []
  for where, name, check in _schema_fields():
    cases += [(where, name, v) for v in _invalid_values(check)]
  return cases + _network_cases()


SCORE_SDE_PLACE = {f"{dst}.{name}": src for src, (dst, name) in config_lib.sections.SCORE_SDE_FIELDS.items()}


def _set(config: dict, where, name, value):
  """Sets a field where a config file in score_sde's layout holds it; returns the name errors use."""
  if f"{where}.{name}" in SCORE_SDE_PLACE:
    (where, name) = SCORE_SDE_PLACE[f"{where}.{name}"]
  node = config
  for part in where.split("."):
    node = node.setdefault(part, {})
  node[name] = value
  return where, name


def test_every_invalid_value_the_schema_implies_is_caught_naming_the_field():
  """Negative, zero where invalid, NaN, the wrong type, an unknown choice: for every field."""
  base = importlib.import_module("configs.vp.digits").get_config().to_dict()   # plain: ConfigDict is type-safe
  cases = _cases()
  assert len(cases) > 200
  failures = []
  for where, name, value in cases:
    config = copy.deepcopy(base)
    where, name = _set(config, where, name, value)
    try:
      parse_config(config)
      failures.append(f"{where}.{name}={value!r} accepted")
    except ValueError as e:
      message = str(e)
      if not message.startswith(f"{where}.{name}") or "\n" in message:
        failures.append(f"{where}.{name}={value!r}: {message!r}")
  assert not failures, failures[:10]


def test_unknown_fields_and_aliases():
  config = importlib.import_module("configs.vp.digits").get_config()
  config.sampling.pc.num_stpes = 3
  with pytest.raises(ValueError, match=r"^sampling\.pc\.num_stpes is not a config field \(valid fields"):
    parse_config(config)
  # score_sde's flat sampling names still read.
  flat = importlib.import_module("configs.vp.digits").get_config().to_dict()
  del flat["sampling"]["pc"], flat["sampling"]["denoise"]
  flat["sampling"].update(dict(predictor="ancestral_sampling", n_steps_each=2, noise_removal=False, snr=0.2))
  typed = parse_config(flat)
  assert (typed.sampling.pc.predictor, typed.sampling.pc.corrector_steps, typed.sampling.denoise,
          typed.sampling.pc.snr) == ("ancestral_sampling", 2, False, 0.2)
  twice = importlib.import_module("configs.vp.digits").get_config().to_dict()
  twice["training"]["n_jitted_steps"] = 2
  with pytest.raises(ValueError, match="training.steps_per_call is given twice"):
    parse_config(twice)
  both = importlib.import_module("configs.vp.digits").get_config().to_dict()
  both["sde"] = {"name": "vesde"}
  with pytest.raises(ValueError, match=r"sde.name is given twice \(also as score_sde's training.sde\)"):
    parse_config(both)


def test_switching_the_method_uses_that_methods_own_steps():
  """digits sets 500 PC steps (and 18 EDM levels); --config.sampling.method=dpm_solver_pp must not run 500
  DPM steps."""
  config = importlib.import_module("configs.vp.digits").get_config()
  config.sampling.method = "dpm_solver_pp"
  method, options = config_lib.sampler_options(parse_config(config))
  assert method == "dpm_solver_pp" and options.num_steps == 20 and options.denoise


def test_discrete_models_sample_on_their_ladder():
  config = importlib.import_module("configs.ve.cifar10_discrete").get_config()
  method, options = config_lib.sampler_options(parse_config(config))
  assert method == "pc" and options.ladder and options.num_steps is None


def test_discrete_models_are_conditioned_on_their_ladder_except_by_smc():
  config = importlib.import_module("configs.ve.cifar10_discrete").get_config()
  config.sampling.condition, config.sampling.inpaint.algorithm = "inpaint", "replacement"
  method, _, options = config_lib.inpainter_arguments(parse_config(config))
  assert method == "pc" and options["options"].ladder and options["options"].num_steps is None
  config.sampling.inpaint.algorithm = "smc"
  _, _, options = config_lib.inpainter_arguments(parse_config(config))
  assert not options["options"].ladder and options["options"].corrector == "none"
  config.sampling.condition, config.sampling.inverse.algorithm = "inverse", "ddrm"
  method, algorithm, options = config_lib.inverse_arguments(parse_config(config))
  assert method is None and algorithm == "ddrm" and "options" not in options


# ---------------------------------------------------------------------- through main.py itself
MAIN_CASES = [
    (["--config.model.nf=0"], "model.nf"),
    (["--config.model.ch_mult=()"], "model.ch_mult"),
    (["--mode=sample", "--config.sampling.method=ode", "--config.sampling.ode.rtol=-1"], "sampling.ode.rtol"),
    (["--config.training.batch_size=-4"], "training.batch_size"),
    (["--config.optim.lr=nan"], "optim.lr"),
    (["--config.sampling.pc.predictor=ddim"], "sampling.pc.predictor"),
    (["--config.data.image_size=12", "--config.model.ch_mult=(1,2,2,2)"], "data.image_size"),
]


@pytest.mark.parametrize("args, field", MAIN_CASES, ids=[c[1] + str(i) for i, c in enumerate(MAIN_CASES)])
def test_main_stops_bad_values_in_one_line_without_touching_the_workdir(tmp_path, args, field):
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "2000").mkdir(parents=True)
  marker = workdir / "checkpoints" / "2000" / "state"
  marker.write_bytes(b"checkpoint bytes")
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "main.py", "--config=configs/vp/digits.py", f"--workdir={workdir}", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  elapsed = time.perf_counter() - start
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), lines
  assert elapsed < 30
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before and marker.read_bytes() == b"checkpoint bytes"


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  out = subprocess.run([sys.executable, "main.py", "--config=configs/vp/digits.py", f"--workdir={path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 2 and out.stderr.strip() == f"error: --workdir {str(path)!r} is a file, not a directory"


# Options the typed config sets for every method from shared fields (sampling.t_min, .denoise, .nfe) or
# derives (pc's ladder from training.continuous).
SHARED_SAMPLER_OPTIONS = {"t_min", "denoise", "nfe", "ladder"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_module)
def test_every_sampler_likelihood_and_training_option_can_be_overridden_from_each_config_file(path):
  """A --config.sampling.<method>.<option> / --config.eval.bpd_<option> override needs the field in the
  ConfigDict: every builder option of every method and of the likelihood must be there."""
  import inspect

  raw = importlib.import_module(_module(path)).get_config()
  for method in samplers.METHODS:
    options = set(samplers.sampler_option_names(method)) - SHARED_SAMPLER_OPTIONS
    missing = sorted(options - set(raw.sampling[method].keys()))
    assert not missing, f"sampling.{method} lacks {missing}"
  assert {"t_min", "denoise", "nfe"} <= set(raw.sampling.keys())
  likelihood = set(inspect.signature(samplers.get_likelihood_fn).parameters) - {"sde", "eps"}
  missing = sorted(o for o in likelihood if f"bpd_{o}" not in raw.eval)
  assert not missing, f"eval lacks bpd_ fields for {missing}"
  # and every training field, how to run included (--config.training.remat=full, .backward=xla, ...)
  missing = sorted(f.name for f in dataclasses.fields(config_lib.sections.Training) if f.name not in raw.training)
  assert not missing, f"training lacks {missing}"


def test_the_network_can_be_swapped_on_any_config():
  """--config.model.name=ddpm on an NCSN++ config builds DDPM from the fields they share; NCSN++'s own fields
  are set aside (named), not an error."""
  config = importlib.import_module("configs.vp.cifar10").get_config()
  config.model.name = "ddpm"
  typed = parse_config(config)
  assert typed.model.name == "ddpm" and "fourier_scale" in typed.model.ignored and "fir" in typed.model.ignored
  assert type(models.get_model(typed.model)).__name__ == "DDPM"
  assert typed.model.network["nf"] == config.model.nf and typed.sde.name == "vpsde"


def test_shared_sampling_options_are_set_once():
  config = importlib.import_module("configs.vp.digits").get_config().to_dict()
  config["sampling"]["pc"]["t_min"] = 0.01
  with pytest.raises(ValueError, match=r"^sampling\.pc\.t_min is not a config field \(set sampling\.t_min"):
    parse_config(config)
  config = importlib.import_module("configs.vp.digits").get_config()
  config.sampling.t_min, config.sampling.method = 0.01, "unipc"
  method, options = config_lib.sampler_options(parse_config(config))
  assert (method, options.t_min, options.grid, options.order) == ("unipc", 0.01, "logsnr", 2)
