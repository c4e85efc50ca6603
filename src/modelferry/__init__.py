"""modelferry: the life of a model, from training to the edge, as plain Python."""

__version__ = "0.1.0"
