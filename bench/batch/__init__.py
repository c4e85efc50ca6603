"""The batch scoring benchmark: `python -m bench.batch` (see bench/README.md)."""
