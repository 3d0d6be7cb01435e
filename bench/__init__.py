"""Benchmarks: run as modules, for example ``python -m bench.purge``."""
