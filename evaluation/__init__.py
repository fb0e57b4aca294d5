"""Sample-quality metrics: Frechet distance (FID), kernel inception distance (KID), feature extractors."""

from evaluation.fid import feature_statistics, frechet_distance, kernel_distance
from evaluation.digits_classifier import DigitsFeatures

__all__ = ["frechet_distance", "kernel_distance", "feature_statistics", "DigitsFeatures"]
