"""Benchmarks of the score networks and the train step: speed, compile time and memory on XLA:CPU, and
against score_sde_pytorch's own networks."""
