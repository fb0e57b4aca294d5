"""Command-line tools, each run as ``python -m tools.<name>``:

* ``tools.convert_checkpoint``: a published score_sde / score_sde_pytorch checkpoint -> a workdir;
* ``tools.data_stats``: a data set's noise-scale statistics and its FID reference statistics;
* ``tools.convert_inception``: the FID Inception's pytorch weights -> a numpy archive.

Tools may import any part of the project; nothing imports them. Config files are loaded by
``schema.load_config_file`` (``tools.data_stats`` reads ``--config`` through absl's ``config_flags``, as
main.py does, for its ``--config.FIELD=VALUE`` overrides).
"""
