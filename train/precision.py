"""Mixed precision and channels-last for the learner, on CUDA and on CPUs with native bf16."""

from __future__ import annotations

import fastai.callback.fp16  # noqa: F401  (adds Learner.to_fp16 / to_bf16)
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback

from stampcheck.device import autocast_dtype


class CpuAutocast(Callback):
    """bf16 autocast around the forward pass and the loss on the CPU. fastai's MixedPrecision
    autocasts on CUDA only; bf16 keeps fp32's range, so no loss scaling is needed."""

    order = 10  # where MixedPrecision sits: before the loss and after the batch is on the device

    def __init__(self):
        self.ctx = None

    def before_batch(self):
        self.ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        self.ctx.__enter__()

    def after_pred(self):
        self.learn.pred = self.pred.float()

    def after_loss(self):
        self._leave()

    def after_batch(self):
        self._leave()  # a batch cancelled before its loss must not leave autocast switched on

    def _leave(self):
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            self.ctx = None


def set_precision(learn, device, mixed_precision: bool = True):
    """Channels-last and autocast where the hardware gains from them; return the autocast dtype (None: fp32)."""
    dtype = autocast_dtype(device, mixed_precision)
    if dtype is None:
        return None
    learn.add_cb(ChannelsLast())
    if device.type == "cuda":
        learn.to_bf16() if dtype == torch.bfloat16 else learn.to_fp16()
    else:
        learn.add_cb(CpuAutocast())
    return dtype
