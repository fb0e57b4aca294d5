"""The typed configuration: the one boundary where a ConfigDict becomes validated, frozen sections.

``parse_config(config_dict) -> Config`` (sections ``sde``, ``model`` (the network), ``score`` (the
parameterisation), ``ema``, ``training``, ``sampling``, ``eval``, ``data``, ``optim``);
``load_config_file(path) -> ConfigDict``; ``sampler_options(config) -> (method, options object)``.
The schema imports the library parts whose options it types (sde_lib, models, samplers, data_lib); none of
them imports it.
"""

from schema.config import LABELLED_DATASETS, Config, as_config, check_consistency, parse_config
from schema.fields import Section, build_section, record_read, track_reads
from schema.load import load_config_file
from schema.sampling import (CONDITIONS, DERIVED, SHARED, Inpaint, Inverse, Sampling, config_fields, inpainter_arguments,
                             inverse_arguments, observation_arguments, sampler_options)
from schema.sections import Data, Ema, Eval, Model, Optim, Score, Sde, Training, likelihood_options

__all__ = ["Config", "parse_config", "as_config", "check_consistency", "load_config_file", "sampler_options",
           "inpainter_arguments", "inverse_arguments", "observation_arguments", "likelihood_options", "config_fields",
           "track_reads", "record_read", "Section", "build_section", "Sde", "Model", "Score", "Ema", "Training",
           "Sampling", "Inpaint", "Inverse", "Eval", "Data", "Optim",
           "CONDITIONS", "SHARED", "DERIVED", "LABELLED_DATASETS"]
