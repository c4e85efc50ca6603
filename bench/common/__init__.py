"""What the benchmarks share: the model, processes, the machine, reports, the lifecycle."""
