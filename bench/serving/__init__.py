"""The online scoring benchmark: `python -m bench.serving` (see bench/README.md)."""
