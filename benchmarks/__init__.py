"""Benchmarks, by family, each runnable from the repository root as ``python -m benchmarks.<family>.<name>``:

  samplers/     the samplers and the likelihood against the Gaussian-mixture oracle, the fitted grids, and
                the memory of gradients through them;
  networks/     speed, compile time and memory of the score networks and the train step on XLA:CPU (and
                against score_sde_pytorch's own networks);
  pipeline/     main.py end to end: the toy and digits defaults, time to the default, a converted published
                model's sampling, kill -9 and resume;
  conditional/  controllable generation: guidance and inpainting on the oracle and on digits.

Shared helpers live in ``benchmarks/common.py`` (and ``testkit/`` for what the tests use too); results are
written to ``benchmarks/results/``. Nothing in the library or the tests imports this package.
"""
