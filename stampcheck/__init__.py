"""stampcheck: prove from photos that a product carries its inspection stamp, and where.

``from stampcheck import Detector`` is the Python API (stampcheck.api); it loads on first use, so
``import stampcheck`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["Detector", "Detection"]


def __getattr__(name):
    if name in __all__:
        from stampcheck import api

        return getattr(api, name)
    raise AttributeError(f"module 'stampcheck' has no attribute {name!r}")
