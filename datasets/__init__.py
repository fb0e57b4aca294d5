"""Data: the Gaussian-mixture oracle (``datasets.gmm``) and, later, the image pipelines."""

from datasets.gmm import GaussianMixture, example_mixture

__all__ = ["GaussianMixture", "example_mixture"]
