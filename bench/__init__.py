"""Benchmarks: pytest-benchmark suites here, scripts in ``scripts/``, peer comparison in ``peers/``; run from the
repository root as modules (``python -m bench.scripts.bench_storage``). Results are written to ``results/``."""
