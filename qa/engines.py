"""The engines that run a trained model on photos: torch (a model folder) or onnxruntime (its export)."""

from __future__ import annotations

from pathlib import Path

from stampcheck.runtime import ModelError, OnnxModel

ENGINES = ("torch", "onnx")


def load_engine(model: Path, engine: str = "torch", device: str | None = None):
    """The engine that runs ``model``: "torch" (a model folder) or "onnx" (an exported model.onnx,
    or the folder holding it); a model that cannot be used raises ModelError."""
    if engine == "onnx":
        return OnnxModel(model, device)
    if engine != "torch":
        raise ModelError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    try:
        from stampcheck.train.predict import Predictor
    except ImportError as e:  # a runtime install (pip install 'stampcheck[runtime]') has no torch
        raise ModelError(f"the torch engine needs {e.name or 'torch'}, which is not installed: use "
                         "--engine onnx with an exported model, or pip install 'stampcheck[full]'") from e
    return Predictor(model, device)
