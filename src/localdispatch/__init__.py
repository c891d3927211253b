"""localdispatch: run a team of AI coding workers on one machine."""

__version__ = "0.1.0"
