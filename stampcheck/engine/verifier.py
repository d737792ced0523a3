"""The verifier's network: a ResNet body and a small head that says, for a close crop of a detector's
candidate, which stamp it is or that it is none of ours (class 0). Trained by
stampcheck.train.verifier_training; run by the torch back-end through stampcheck.engine.second_look.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from fastai.layers import AdaptiveConcatPool2d, Flatten
from fastai.vision.learner import num_features_model
from torch import nn

from stampcheck.engine.config import VERIFIER_WEIGHTS, ModelError
from stampcheck.engine.network import make_net, read_weights
from stampcheck.engine.second_look import LookConfig

WEIGHTS_NAME = VERIFIER_WEIGHTS


class Verifier(nn.Module):
    """ResNet body -> concat pooling -> ``1 + n_classes`` logits, class 0 "none of ours"."""

    def __init__(self, body: nn.Module, n_classes: int, features: int = 512):
        super().__init__()
        self.body = body
        self.head = nn.Sequential(AdaptiveConcatPool2d(), Flatten(), nn.BatchNorm1d(2 * features),
                                  nn.Dropout(0.25), nn.Linear(2 * features, 1 + n_classes))

    def forward(self, x):
        return self.head(self.body(x))


class VerifierGraph(nn.Module):
    """uint8 crops (N, 3, s, s) RGB -> class probabilities (N, 1 + C); normalising inside with the
    model's mean and std, as the detector's InferenceGraph."""

    def __init__(self, model: Verifier, config: dict):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1) * 255)

    def forward(self, x):
        return self.model((x.float() - self.mean) / self.std).softmax(-1)


def from_detector(detector: nn.Module, n_classes: int) -> Verifier:
    """A verifier whose body is a copy of the detector's up to its stride-16 stage (a StampNet's
    ``stem``): on a 96 px crop that stage already sees a 6 x 6 grid of the stamp, and the last stage
    would cost a quarter more per crop and hold three quarters of the weights."""
    body = copy.deepcopy(detector.stem)
    return Verifier(body, n_classes, features=num_features_model(body))


def load_verifier(model_dir: Path, config: dict) -> tuple[LookConfig, VerifierGraph] | None:
    """The model folder's verifier, or None when it has none (a one-stage model)."""
    v = config.get("verifier")  # checked with the rest of the config (stampcheck.engine.config)
    if v is None:
        return None
    path = Path(model_dir) / WEIGHTS_NAME
    # missing, truncated, a named pipe, no torch file: one line, and no code in it ever runs
    state = read_weights(path, "train the model again (or remove the verifier section of its config.json "
                         "to judge by the detector alone)")
    with torch.device("meta"):
        detector = make_net(config["arch"], len(config["classes"]))
        model = from_detector(detector, len(config["classes"]))
    try:
        model.load_state_dict(state, assign=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ModelError(f"{path} does not match its config.json ({str(e).strip().splitlines()[-1].strip()[:160]})") from e
    return LookConfig.from_dict(v), VerifierGraph(model, config).eval().requires_grad_(False)


