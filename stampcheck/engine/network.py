"""The detector's network, StampNet, and a model folder read into it (config.json checked, model.pth
read as data only). Training builds it with starting weights (stampcheck.train.model); running it
only needs the architecture.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.layers import ConvLayer
from fastai.vision.learner import create_body, num_features_model
from torch import nn
from torchvision import models

from stampcheck.engine.config import ARCH_NAMES, ModelError, config_problem
from stampcheck.files import NotAFile, open_regular, read_text

ARCHS = {name: getattr(models, name) for name in ARCH_NAMES}
SCORE_PRIOR = 0.01  # initial stamp probability of every cell: the first steps are not spent
# pushing down the scores of the many empty cells


class StampNet(nn.Module):
    """ResNet body plus a dense head that predicts, for every cell of a stride-16 grid, one score
    per stamp class and one box.

    - Neck: layer4 (stride 32) is projected to ``width`` channels, upsampled and added to the
      projected layer3 (stride 16), then two 3x3 conv-BN-ReLU layers. Stride 16 keeps small stamps
      (20 px on a 224 px input) inside a cell of their own.
    - Output: ``(B, n_classes + 4, H, W)``. Channels ``:n_classes`` are score logits; the last four
      are the log distances from the cell centre to the box's left, top, right and bottom edges,
      in cells (see :func:`stampcheck.engine.graph.decode_boxes`).
    """

    def __init__(self, body: nn.Sequential, n_classes: int, width: int = 128):
        super().__init__()
        self.n_classes = n_classes
        self.stem, self.last = body[:-1], body[-1]
        c3, c4 = num_features_model(self.stem), num_features_model(body)
        self.lat3 = nn.Conv2d(c3, width, 1)
        self.lat4 = nn.Conv2d(c4, width, 1)
        self.smooth = nn.Sequential(ConvLayer(width, width), ConvLayer(width, width))
        self.out = nn.Conv2d(width, n_classes + 4, 3, padding=1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)
        nn.init.constant_(self.out.bias[:n_classes], -math.log((1 - SCORE_PRIOR) / SCORE_PRIOR))

    @property
    def device(self) -> torch.device:
        """fastai's distributed wrapper asks the model for its device."""
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.stem(x)
        f4 = self.last(f3)
        p = self.lat3(f3) + F.interpolate(self.lat4(f4), size=f3.shape[-2:], mode="nearest")
        return self.out(self.smooth(p))


def make_net(arch: str, n_classes: int, resnet: nn.Module | None = None) -> StampNet:
    """A StampNet on ``resnet`` (torchvision's ``arch``, random weights when None)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    resnet = ARCHS[arch](weights=None) if resnet is None else resnet
    # layer4 is the last stage kept; cut=-2 drops the pooling and the classifier.
    return StampNet(create_body(resnet, pretrained=False, cut=-2), n_classes)


def load_model_dir(model_dir: Path) -> tuple[dict, StampNet]:
    """config.json and the network holding model.pth's weights, from a `stampcheck train` folder."""
    model_dir = Path(model_dir)
    try:
        config = json.loads(read_text(model_dir / "config.json"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir} is not a stampcheck model folder ({e}); "
                         "make one with `stampcheck train`") from e
    problem = config_problem(config)
    if problem:
        raise ModelError(f"{model_dir / 'config.json'} cannot be used: {problem}")
    state = read_weights(model_dir / "model.pth", "make a model folder with `stampcheck train`")
    arch, n_classes = config["arch"], len(config["classes"])
    with torch.device("meta"):  # skip the random initialisation of weights about to be replaced
        model = make_net(arch, n_classes)
    try:
        model.load_state_dict(state, assign=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[-1].strip()  # torch lists every mismatched layer on its own line
        raise ModelError(f"{model_dir}/model.pth does not match its config.json ({first})") from e
    return config, model


def read_weights(path: Path, hint: str, kind: str = "torch weights") -> dict:
    """The dict of tensors a torch file holds, read as data only (no code in a file runs), from a
    regular file only (a named pipe would block the read); ModelError in one line ending in
    ``hint`` otherwise, whatever else the file holds (text, a truncated file, other objects)."""
    try:
        with open_regular(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except NotAFile as e:
        raise ModelError(f"{e}; {hint}") from e
    except OSError as e:
        raise ModelError(f"{path} cannot be read ({e.strerror or e}); {hint}") from e
    except Exception as e:  # torch's errors for what is no torch file vary, and its advice is not ours to give
        raise ModelError(f"{path} is not a {kind} file ({type(e).__name__}); {hint}") from e
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a dict of weights; {hint}")
    return state
