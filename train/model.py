"""The network to train, with its starting weights: the shipped base detector, ImageNet's, or none."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import torch
from torchvision import models

from stampcheck.engine.config import ModelError
from stampcheck.engine.network import ARCHS, StampNet, make_net, read_weights

WEIGHTS = {"resnet18": models.ResNet18_Weights.IMAGENET1K_V1, "resnet34": models.ResNet34_Weights.IMAGENET1K_V1,
           "resnet50": models.ResNet50_Weights.IMAGENET1K_V2}
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
    model = make_net(arch, n_classes, resnet)
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
