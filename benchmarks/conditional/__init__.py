"""Benchmarks of controllable generation: guidance and inpainting on the Gaussian-mixture oracle and on
digits."""
