"""Where the model runs: the CUDA GPU when there is one, else the CPU; a user may choose."""

from __future__ import annotations

import os


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DeviceError(ValueError):
    """A --device that this machine does not have: bad usage, not a failure of the tool."""


def pick_device(name: str | None = None):
    """``None``/``"auto"``: cuda if available, else cpu. Otherwise the named device, checked."""
    import torch  # here, not at import time: `compose` and `--help` should not pay for torch

    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {name!r} is not a device torch knows (cpu, cuda, cuda:1, mps...)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # every core; a user who shares the machine says otherwise with OMP_NUM_THREADS (threads
        # that wait on a core taken by another process stall each other at every barrier)
        torch.set_num_threads(cpu_count())
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 maths natively (AVX512-BF16 or AMX). There, autocasting to bf16
    trains about 1.4x and predicts about 2x faster; elsewhere bf16 is emulated and slower than fp32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(device, mixed_precision: bool = True):
    """The dtype to autocast to, or None for plain fp32: on CUDA bf16 where the GPU supports it,
    else fp16; on the CPU bf16 where it runs natively (:func:`cpu_has_bf16`)."""
    import torch

    if not mixed_precision:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None
