"""Running a trained model on photos, one way for every caller (qa, evaluate, training's own checks,
the Python API): a torch back-end for a model folder, an ONNX one for its export, and everything
around the network shared by both (photos in, decoding, the second look, the batch loop).

The package imports no torch: a `pip install 'stampcheck[runtime]'` PC runs the ONNX back-end. Each
back-end reads the model's size, classes and threshold from the model itself, once.
"""

from __future__ import annotations

from pathlib import Path

from stampcheck.engine.config import ModelError
from stampcheck.engine.onnx import OnnxModel

ENGINES = ("torch", "onnx")


def load_engine(model: Path, engine: str = "torch", device: str | None = None, threshold: float | None = None):
    """The back-end that runs ``model``: "torch" (a model folder) or "onnx" (an exported model.onnx,
    or the folder holding it), judging at ``threshold`` (None: the model's own). A model that cannot
    be used raises ModelError."""
    if engine == "onnx":
        return OnnxModel(model, device, threshold)
    if engine != "torch":
        raise ModelError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    try:
        from stampcheck.engine.torch_engine import Predictor
    except ImportError as e:  # a runtime install (pip install 'stampcheck[runtime]') has no torch
        raise ModelError(f"the torch engine needs {e.name or 'torch'}, which is not installed: use "
                         "--engine onnx with an exported model, or pip install 'stampcheck[full]'") from e
    return Predictor(model, device, threshold=threshold)
