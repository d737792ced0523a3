"""What a model's config says, and when it can be trusted: one check for a model folder's
config.json and for the copy an ONNX export carries in its metadata, which someone else may have
written; and the threshold photos are judged at. No torch here: the ONNX back-end imports it.
"""

from __future__ import annotations

import math

ARCH_NAMES = ("resnet18", "resnet34", "resnet50")  # the torchvision ResNets a model's body is made of
SIZES = (32, 2048)  # input sizes a config may ask for: past 2048 one photo's activations take many GB
# the long sides a verifier may ask photos to be brought to for its crops: qa holds each photo of a
# batch (and those read ahead) at that size until its crops are cut, so 8192 px would take GBs
DETAILS = (32, 1024)
ONNX_NAME, TORCHSCRIPT_NAME = "model.onnx", "model.torchscript"
VERIFIER_WEIGHTS = "verifier.pth"  # a model folder's second look (stampcheck.engine.verifier)
META_KEY = "stampcheck"  # the exported file's metadata: the model's config.json, and what it was made from


class ModelError(ValueError):
    """A model folder or file that cannot be used: missing, corrupt, or not what the caller needs."""


def judging_threshold(config: dict, given: float | None = None, second_look: bool = True) -> float:
    """The score that makes a stamp: ``given`` when the user gives one, else the model's own: its
    verifier's when it is run in two stages (``second_look``), its detector's otherwise."""
    if given is not None:
        return float(given)
    look = config.get("verifier") if second_look else None
    return float(look["threshold"] if look is not None else config["threshold"])


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v) -> str:
    """A value for a one-line message: a file's list of a million names is not printed whole."""
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def config_problem(config) -> str | None:
    """What makes a model's config unusable (a hand edit, another tool's file), or None. Checked
    before any weight is read or any photo decoded: a size of 20000 would cost tens of GB per photo,
    a threshold below 0 would pass every photo."""
    if not isinstance(config, dict):
        return "it is not a JSON object"
    if config.get("arch") not in ARCH_NAMES:
        return f"arch is {_short(config.get('arch'))}, not one of {', '.join(ARCH_NAMES)}"
    classes = config.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)):
        return f"classes must be a non-empty list of names, not {_short(classes)}"
    size = config.get("size")
    if not (isinstance(size, int) and not isinstance(size, bool) and SIZES[0] <= size <= SIZES[1]):
        return f"size must be a whole number of pixels from {SIZES[0]} to {SIZES[1]}, not {_short(size)}"
    threshold = config.get("threshold")
    if not (_number(threshold) and 0 <= threshold <= 1):
        return f"threshold must be a number from 0 to 1, not {_short(threshold)}"
    for key in ("mean", "std"):
        v = config.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(map(_number, v))) or (key == "std" and min(v) <= 0):
            return f"{key} must be 3 numbers (one per colour channel{', above 0' if key == 'std' else ''}), not {_short(v)}"
    if config.get("verifier") is not None:
        return verifier_problem(config["verifier"])
    return None


def verifier_problem(v) -> str | None:
    """What makes a stored verifier config (config.json's ``verifier``: stampcheck.engine.second_look.LookConfig)
    unusable, or None."""
    if not isinstance(v, dict):
        return "verifier must be a JSON object"
    for key, lo, hi in (("size", 16, 512), ("top_k", 1, 20), ("detail", *DETAILS)):
        x = v.get(key)
        if not (isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi):
            return f"verifier {key} must be a whole number from {lo} to {hi}, not {_short(x)}"
    for key, lo, hi in (("margin", 0.0, 2.0), ("candidate_threshold", 0.0, 1.0), ("threshold", 0.0, 1.0)):
        x = v.get(key)
        if not (_number(x) and lo <= x <= hi):
            return f"verifier {key} must be a number from {lo:g} to {hi:g}, not {_short(x)}"
    return None

