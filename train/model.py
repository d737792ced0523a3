"""The network: a ResNet body from torchvision (cut by fastai) and a small dense detection head."""

from __future__ import annotations

import json
import math
import socket
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.layers import ConvLayer
from fastai.vision.learner import create_body, num_features_model
from torch import nn
from torchvision import models

from stampcheck.files import NotAFile, open_regular, read_text
from stampcheck.modelconfig import ARCH_NAMES, config_problem
from stampcheck.runtime import ModelError  # the ONNX engine raises it too: one error to catch

ARCHS = {name: getattr(models, name) for name in ARCH_NAMES}
WEIGHTS = {"resnet18": models.ResNet18_Weights.IMAGENET1K_V1, "resnet34": models.ResNet34_Weights.IMAGENET1K_V1,
           "resnet50": models.ResNet50_Weights.IMAGENET1K_V2}
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
      in cells (see :func:`stampcheck.train.detect.decode_boxes`).
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
        model, _ = build_model(arch, n_classes, pretrained="none")
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


BASE_DIR = Path(__file__).resolve().parents[1] / "data" / "weights"
STARTS = ("base", "imagenet", "none")  # what --pretrained chooses


def base_path(arch: str) -> Path:
    """The shipped base detector for ``arch`` (made by `stampcheck pretrain`, card beside it)."""
    return BASE_DIR / f"stampnet-{arch}-base.pth"


def build_model(arch: str, n_classes: int, pretrained: str | bool = "base", weights: Path | None = None,
                log=print) -> tuple[StampNet, str]:
    """Build the network; return it and a sentence saying where its weights came from.

    ``pretrained``: "base" (the shipped stamp detector, whole network), "imagenet" (the body only),
    "none"; without the chosen weights it warns and falls back: base -> ImageNet -> from scratch.
    ``weights``, a local file of torchvision ResNet weights, overrides it."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    start = {True: "imagenet", False: "none"}.get(pretrained, pretrained)
    if start not in STARTS:
        raise ValueError(f"--pretrained {pretrained!r}: choose one of {', '.join(STARTS)}")
    resnet = ARCHS[arch](weights=None)
    source = "random initialisation (from scratch, --pretrained none)"
    base = None
    if weights:
        state = read_weights(weights, "--weights takes a .pth of torchvision ResNet weights")
        try:
            missing, unexpected = resnet.load_state_dict(state.get("state_dict", state), strict=False)
        except (RuntimeError, TypeError, AttributeError) as e:  # same names, other shapes: another arch
            raise ModelError(f"{weights} does not hold {arch} weights "
                             f"({str(e).strip().splitlines()[-1].strip()[:160]})") from e
        if len(missing) > 10:
            raise ValueError(f"{weights} does not hold {arch} weights ({len(missing)} layers missing)")
        source = f"weights from {weights}"
    elif start == "base":
        path = base_path(arch)
        if path.is_file():
            base, source = path, f"the base detector {path.name}"
        else:
            log(f"warning: no base detector for {arch} ({path} not found; `stampcheck pretrain` makes one); "
                "trying ImageNet weights")
            start = "imagenet"
    if start == "imagenet" and not weights:
        state, source = imagenet_weights(arch)
        if state is None:
            log(f"warning: {source}; training {arch} from scratch")
            source = f"random initialisation (from scratch: {source})"
        else:
            resnet.load_state_dict(state)
    # layer4 is the last stage kept; cut=-2 drops the pooling and the classifier.
    body = create_body(resnet, pretrained=False, cut=-2)
    model = StampNet(body, n_classes)
    if base is not None:
        load_base(model, base)
    return model, source


def load_base(model: StampNet, path: Path) -> None:
    """Every weight of the one-class base; each of the model's classes starts from its score."""
    state = read_weights(path, "make one with `stampcheck pretrain`", kind="base detector")
    try:
        state = {k: v.float() for k, v in state.items()}
    except AttributeError as e:  # not tensors: whatever it is, named in one line
        raise ModelError(f"{path} is not a base detector file (it holds no tensors)") from e
    broken = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if broken:  # an inf running variance would silence its channel in every model trained from it
        raise ModelError(f"{path} holds values that are not finite ({', '.join(broken[:3])}); "
                         "make the base again with `stampcheck pretrain`, or train with --pretrained none")
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:  # another arch's base, or not a base at all: counted, not listed
        raise ModelError(f"{path} does not fit this network ({len(missing)} layers missing, "
                         f"{len(unexpected)} unexpected; made for another --arch?)")
    n = model.n_classes
    for key in ("out.weight", "out.bias"):
        w = state[key]  # channels: 1 score, then 4 box distances
        state[key] = torch.cat([w[:1].repeat(n, *([1] * (w.dim() - 1))), w[1:]])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # same layers, other shapes
        raise ModelError(f"{path} does not fit this network ({str(e).splitlines()[-1].strip()[:160]})") from e


def imagenet_weights(arch: str, timeout: float = 10.0) -> tuple[dict | None, str]:
    """ImageNet weights from torch's cache, else a download; never raises."""
    w = WEIGHTS[arch]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True), f"ImageNet weights from {cached}"
        except Exception as e:  # a corrupt cache file must not stop training
            return None, f"cached ImageNet weights {cached} are unreadable ({e})"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = w.get_state_dict(progress=False)
        return state, f"ImageNet weights downloaded to {cached}"
    except Exception as e:
        return None, (f"ImageNet weights for {arch} are not in {cached.parent} and could not be "
                      f"downloaded ({type(e).__name__}); pass --weights PATH to use a local file")
    finally:
        socket.setdefaulttimeout(old)
