"""Stand-alone benchmark scripts, each run as a module from the repository root: ``python -m bench.scripts.<name>``."""
