"""The network's raw output decoded in torch, and the inference graph both back-ends run: uint8 photos in,
per-cell scores and boxes in input pixels out (what `stampcheck export` writes as ONNX or TorchScript).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stampcheck.engine.network import load_model_dir

MAX_LOG_DIST = 6.0   # clamp before exp: no box is e^6 = 400 cells wide


def cell_centres(h: int, w: int, device) -> torch.Tensor:
    """(h*w, 2) centres of the grid cells, row-major, in -1..1."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], -1)


def split_output(out: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C+4, H, W) -> score logits (B, HW, C) and boxes (B, HW, 4) in -1..1."""
    b, _, h, w = out.shape
    flat = out.float().flatten(2).transpose(1, 2)
    return flat[..., :n_classes], decode_boxes(flat[..., n_classes:], h, w)


def decode_boxes(raw: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Log distances (in cells) from each cell centre to the four edges -> boxes in -1..1."""
    c = cell_centres(h, w, raw.device)
    d = raw.clamp(max=MAX_LOG_DIST).exp() * torch.tensor([2 / w, 2 / h, 2 / w, 2 / h], device=raw.device)
    return torch.stack([c[:, 0] - d[..., 0], c[:, 1] - d[..., 1], c[:, 0] + d[..., 2], c[:, 1] + d[..., 3]], -1)


class InferenceGraph(nn.Module):
    """uint8 (B, 3, S, S) RGB photos squished to S x S -> ``scores`` (B, HW, C), probabilities, and
    ``boxes`` (B, HW, 4), x0, y0, x1, y1 in input pixels, one per cell of the head's grid (row-major).
    Normalising with the model's mean and std happens inside."""

    def __init__(self, model: nn.Module, config: dict, size: int | None = None):
        super().__init__()
        self.model, self.n_classes = model, len(config["classes"])
        self.size = int(config["size"] if size is None else size)
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1) * 255)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, boxes = split_output(self.model(self.normalise(x)), self.n_classes)
        return logits.sigmoid(), (boxes + 1) * (self.size / 2)


def load_graph(model_dir: Path, size: int | None = None) -> tuple[dict, InferenceGraph]:
    """The model folder's config and its inference graph, at ``size`` px (None: the config's)."""
    config, model = load_model_dir(model_dir)
    # a graph for inference only: tracing must see weights, not tensors waiting for gradients
    return config, InferenceGraph(model, config, size).eval().requires_grad_(False)
