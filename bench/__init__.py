"""Benchmarks: run them as modules from the repository root (see bench/README.md)."""
