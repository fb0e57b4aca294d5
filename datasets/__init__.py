"""Data: the Gaussian-mixture oracle (``datasets.gmm``), image data sets (``datasets.images``: tfds, the
embedded digits, your own FOLDER / ARRAY images) and their statistics (``python -m datasets.stats``)."""

from datasets.gmm import GaussianMixture, example_mixture
from datasets.images import DATASETS, DatasetNotFoundError, ImageData, get_dataset

__all__ = ["GaussianMixture", "example_mixture", "DATASETS", "DatasetNotFoundError", "ImageData", "get_dataset"]
