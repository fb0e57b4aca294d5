"""Data: the Gaussian-mixture oracle (``datasets.gmm``), image data sets (``datasets.images``: batching and
``get_dataset``, over the sources in ``datasets.standard`` (tfds, the embedded digits) and
``datasets.own_data`` (your own FOLDER / ARRAY images, read by ``datasets.untrusted_images``)). A data set's
statistics: ``python -m tools.data_stats``."""

from datasets.gmm import GaussianMixture, example_mixture
from datasets.images import DATASETS, DatasetNotFoundError, ImageData, get_dataset

__all__ = ["GaussianMixture", "example_mixture", "DATASETS", "DatasetNotFoundError", "ImageData", "get_dataset"]
