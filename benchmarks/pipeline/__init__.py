"""End-to-end benchmarks of main.py: the toy and digits defaults, time to the default, sampling a converted
published model, kill -9 and resume."""
