"""Data: the Gaussian-mixture oracle (``data_lib.gmm``), image data sets (``data_lib.images``: batching and
``get_dataset``, over the sources in ``data_lib.standard`` (tfds, the embedded digits) and
``data_lib.own_data`` (your own FOLDER / ARRAY images, read by ``data_lib.untrusted_images``)). A data set's
statistics: ``python -m tools.data_stats``."""

from data_lib.gmm import GaussianMixture, example_mixture
from data_lib.images import DATASETS, DatasetNotFoundError, ImageData, get_dataset

__all__ = ["GaussianMixture", "example_mixture", "DATASETS", "DatasetNotFoundError", "ImageData", "get_dataset"]
