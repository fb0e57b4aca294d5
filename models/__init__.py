"""Score networks (NCSN++, DDPM++, DDPM, MLP), the registry, score parameterisations, EMA.

Samplers and losses never see a network: ``get_score_fn`` turns one into a ``score_fn(x, t)``.
"""

from models import classifier
from models.classifier import NoiseConditionalClassifier
from safeio.untrusted import CheckpointError
from models.ema import ema_update, ema_warmup_rate
from models.mlp import MLP
from models.ncsnpp import DDPM, NCSNpp
from models.published import FORMATS, load_score_sde_checkpoint, read_checkpoint
from models.registry import (MODELS, RUN_ONCE_COMPILER_OPTIONS, count_params, get_model, init_params, initializer,
                             make_apply_fn, model_kwargs, score_fn_from_config, score_options)
from models.score import PARAMETERIZATIONS, VP_CONTINUOUS_LABEL_SCALE, get_score_fn, noise_labels

__all__ = ["NCSNpp", "DDPM", "MLP", "NoiseConditionalClassifier", "classifier", "MODELS", "get_model", "init_params", "count_params", "make_apply_fn",
           "model_kwargs", "get_score_fn", "noise_labels", "PARAMETERIZATIONS", "VP_CONTINUOUS_LABEL_SCALE",
           "ema_update", "ema_warmup_rate", "score_fn_from_config", "score_options", "load_score_sde_checkpoint",
           "read_checkpoint", "FORMATS", "CheckpointError", "RUN_ONCE_COMPILER_OPTIONS", "initializer"]
