"""Sample-quality metrics: FID, KID, the Inception score; feature extractors (FID Inception-v3, digits MLP);
the per-data-set scorers (``evaluation.scorers``, picked by ``scorer_for(config, cache_dir)``)."""

from evaluation.fid import feature_statistics, frechet_distance, kernel_distance
from evaluation.digits_classifier import DigitsFeatures
from evaluation.pixels import to_unit_range
from evaluation.scorers import DigitsScorer, InceptionScorer, MixtureScorer, NoScorer, Scorer, scorer_for

__all__ = ["frechet_distance", "kernel_distance", "feature_statistics", "DigitsFeatures", "InceptionFeatures",
           "inception_score", "to_unit_range", "Scorer", "NoScorer", "MixtureScorer", "DigitsScorer",
           "InceptionScorer", "scorer_for"]


def __getattr__(name):
  # The Inception network (flax) is imported on first use: the digits and toy metrics do not need it.
  if name in ("InceptionFeatures", "inception_score"):
    from evaluation import inception
    return getattr(inception, name)
  raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
