"""The torch back-end: a trained model folder (config.json, model.pth, and verifier.pth for two
stages) run by torch on the CPU or a GPU, in mixed precision where the hardware does it natively.
Reading photos, decoding and the batch loop are the engine's, the same as for the ONNX back-end;
this module only runs the network (stampcheck.engine.graph.InferenceGraph, the graph export writes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stampcheck.device import autocast_dtype, pick_device
from stampcheck.engine.config import judging_threshold
from stampcheck.engine.graph import load_graph
from stampcheck.engine.photos import to_input
from stampcheck.engine.verifier import load_verifier


class Predictor:
    """A trained model folder (config.json + model.pth) ready to score batches.

    ``mixed_precision`` None follows the training run (its valid threshold was chosen that way).
    ``size`` None is the model's own; training tries others (train.views). A folder with a verifier
    (stampcheck.engine.verifier) is run in two stages unless ``verifier`` is False; ``look`` then says how, and
    the stored threshold the verifier's. ``threshold`` None is the stored one (judging_threshold)."""

    def __init__(self, model_dir: Path, device: str | None = None, mixed_precision: bool | None = None,
                 size: int | None = None, verifier: bool = True, threshold: float | None = None):
        self.config, graph = load_graph(model_dir, size)
        self.classes = self.config["classes"]
        self.size = graph.size
        self.device = pick_device(device)
        self.on_gpu = self.device.type == "cuda"
        if mixed_precision is None:
            mixed_precision = self.config.get("train", {}).get("mixed_precision", True)
        self.dtype = autocast_dtype(self.device, mixed_precision)
        graph.to(self.device)
        if self.dtype is not None:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph, self.model = graph, graph.model
        self.mean, self.std = graph.mean, graph.std
        self.look, self.verifier = None, None
        loaded = load_verifier(model_dir, self.config) if verifier else None
        if loaded:
            self.look, self.verifier = loaded[0], loaded[1].to(self.device)
        two_stage = self.look is not None
        self.stored_threshold = judging_threshold(self.config, second_look=two_stage)
        self.threshold = judging_threshold(self.config, threshold, two_stage)

    def to_input(self, img: Image.Image) -> torch.Tensor:
        """The model's view of a photo: squished to size x size, as in training; uint8 CHW."""
        return torch.from_numpy(to_input(img, self.size).copy())

    def _forward(self, module, x: torch.Tensor):
        x = x.to(self.device, non_blocking=True)
        if self.dtype is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return module(x)

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, 3, S, S) -> scores (B, HW, C) and boxes (B, HW, 4) in input pixels (the engine
        interface of stampcheck.engine.run)."""
        scores, boxes = self._forward(self.graph, torch.from_numpy(np.require(batch, requirements="CW")))
        return scores.float().cpu().numpy(), boxes.float().cpu().numpy()

    @torch.no_grad()
    def verify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 3, s, s) -> the verifier's class probabilities (N, 1 + C), column 0 "none"."""
        return self._forward(self.verifier, torch.from_numpy(np.require(crops, requirements="CW"))).float().cpu().numpy()
