"""nmc: the neural media codec."""

__version__ = "0.1.0"
