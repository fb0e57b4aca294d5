"""Sample-quality metrics: FID, KID, the Inception score; feature extractors (FID Inception-v3, digits MLP)."""

from evaluation.fid import feature_statistics, frechet_distance, kernel_distance
from evaluation.digits_classifier import DigitsFeatures
from evaluation.inception import InceptionFeatures, inception_score

__all__ = ["frechet_distance", "kernel_distance", "feature_statistics", "DigitsFeatures", "InceptionFeatures",
           "inception_score"]
