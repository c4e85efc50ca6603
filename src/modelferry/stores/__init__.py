"""Package stores: where signed model packages live and the links devices download them by."""
