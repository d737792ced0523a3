"""Where the model runs: the CUDA GPU when there is one, else the CPU; a user may choose."""

from __future__ import annotations

import os


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_device(name: str | None = None):
    """``None``/``"auto"``: cuda if available, else cpu. Otherwise the named device, checked."""
    import torch  # here, not at import time: `compose` and `--help` should not pay for torch

    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if device.type == "cpu":
        torch.set_num_threads(cpu_count())
    return device


def autocast_dtype(device):
    """Mixed precision on CUDA: bf16 where the GPU supports it, else fp16; none on the CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
