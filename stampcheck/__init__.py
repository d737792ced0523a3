"""stampcheck: prove from photos that a product carries its inspection stamp, and where.

``from stampcheck import Detector`` is the Python API (stampcheck.app.api); it loads on first use, so
``import stampcheck`` stays cheap.
"""

import warnings

__version__ = "0.1.0"
__all__ = ["Detector", "Detection"]

# fastai's layers module calls torch.jit.script when imported (the engine's network and training use
# it), which this torch flags as deprecated: a notice about fastai's internals that would open every
# run's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def __getattr__(name):
    if name in __all__:
        from stampcheck.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'stampcheck' has no attribute {name!r}")
