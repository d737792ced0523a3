"""stampcheck: prove from photos that a product carries its inspection stamp, and where."""

__version__ = "0.1.0"
