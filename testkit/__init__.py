"""Helpers shared by tests/ and benchmarks/; imports the library, never tests or benchmarks.

  pipeline           the tiny digits configuration (``tiny_config``) and its main.py flags (``tiny_flags``);
  kill               main.py under an in-process SIGKILL injector (``run``) and the audit of what a killed
                     run left (``checkpoint_steps``, ``restore``, ``audit``);
  seeded             seeded weights for the reference-equivalence fixtures (numpy only);
  score_sde_pytorch  the CPU patches of an exported score_sde_pytorch (no third-party import).

This file imports nothing: ``seeded`` and ``score_sde_pytorch`` also run under side Pythons (torch
environments) that have none of the project's dependencies.
"""
