"""Sample-quality metrics: FID, KID, the Inception score; feature extractors (FID Inception-v3, digits MLP)."""

from evaluation.fid import feature_statistics, frechet_distance, kernel_distance
from evaluation.digits_classifier import DigitsFeatures

__all__ = ["frechet_distance", "kernel_distance", "feature_statistics", "DigitsFeatures", "InceptionFeatures",
           "inception_score"]


def __getattr__(name):
  # The Inception module is imported on first use, so `python -m evaluation.inception convert ...` runs it
  # once as __main__ (imported here eagerly, runpy warned on every run, before the command's own output).
  if name in ("InceptionFeatures", "inception_score"):
    from evaluation import inception
    return getattr(inception, name)
  raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
