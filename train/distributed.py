"""Multi-process training (torchrun / accelerate launch) through fastai's DistributedTrainer.

fastai's DistributedDL broadcasts each epoch's sample order as a CUDA tensor, which NCCL needs;
on the gloo backend (CPU processes) that tensor must stay on the CPU. Everything else is fastai's.
"""

from __future__ import annotations

import os

import torch
from fastai.callback.progress import ProgressCallback
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import rank_distrib


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def leave_process_group() -> None:
    """End this process's part in a torchrun job before the interpreter exits: a process leaving
    with its gloo threads still alive aborts ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class GlooSafeDistributedDL(DistributedDL):
    def _broadcast(self, t, rank):
        if torch.distributed.get_backend() == "nccl":
            return super()._broadcast(t, rank)
        t = torch.LongTensor(t)
        torch.distributed.broadcast(t, rank)
        return t.tolist()


class StampDistributedTrainer(DistributedTrainer):
    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else GlooSafeDistributedDL(dl, device=self.learn.model.device)


class distributed_training:
    """Context: wrap the learner for DDP when launched with several processes, unwrap after."""

    def __init__(self, learn, device: torch.device):
        self.learn, self.device = learn, device

    def __enter__(self):
        if is_distributed():
            # SyncBatchNorm only runs on CUDA; per-process statistics are fine at our batch sizes.
            # cpu=True makes accelerate pick the gloo backend instead of looking for GPUs.
            self.learn.add_cb(StampDistributedTrainer(sync_bn=False, cpu=self.device.type == "cpu"))
            if rank_distrib():
                self.learn.remove_cb(ProgressCallback)
        return self.learn

    def __exit__(self, *exc):
        if is_distributed():
            self.learn.remove_cb(StampDistributedTrainer)
        return False
