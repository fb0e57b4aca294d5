"""Benchmarks of the samplers and the likelihood: accuracy against the Gaussian-mixture oracle, the fitted
noise-level grids, and the memory of gradients through the samplers."""
