"""The edge delivery benchmark: `python -m bench.delivery` (see bench/README.md)."""
