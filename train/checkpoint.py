"""A pretraining run's state on disk, after every epoch: ``checkpoint.pth`` (weights and optimiser, so
``--resume`` continues where it stopped), ``state.json`` (settings, history, best), and ``base.pth``
when the epoch was the best. Read back as data only: tensors and plain values (``weights_only``).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import time
from dataclasses import asdict
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.learner import Learner

from stampcheck.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from stampcheck.train.config import PretrainConfig


class Checkpoint(Callback):
    """After each epoch: weights and optimiser (for --resume), state.json, and base.pth when the
    valid 'correct' share improved. Epochs skipped on resume are not epochs of this run."""

    order = 72

    def __init__(self, out: Path, cfg: PretrainConfig, start_epoch: int, started: float):
        self.out, self.cfg, self.start_epoch = out, cfg, start_epoch
        self.started, self.seconds_before = started, 0.0

    def after_epoch(self):
        if self.epoch < self.start_epoch:
            return
        row = dict(zip(self.recorder.metric_names[1:-1], self.recorder.values[-1]))
        metrics = {k: float(v) for k, v in row.items()}
        state = read_state(self.out)
        seconds = state.get("seconds", 0.0) + time.time() - self.started
        self.started = time.time()
        history = state.get("history", []) + [{"epoch": self.epoch + 1, **metrics}]
        # epochs of a run begun before each epoch chose its own threshold were judged at 0.5: they
        # are kept in the history but not compared with (a score at another threshold is another figure)
        judged = [r for r in history if "threshold" in r]
        if metrics["correct"] > max((r["correct"] for r in judged[:-1]), default=-1.0):
            save_base(self.learn.model, self.out / "base.pth")
        with atomic_path(self.out / "checkpoint.pth") as tmp:
            buf = io.BytesIO()
            torch.save({"model": self.learn.model.state_dict(), "opt": plain_opt_state(self.learn.opt)}, buf)
            tmp.write_bytes(buf.getvalue())
        best_row = max(judged, key=lambda r: r["correct"])
        write_state(self.out, {**state, "config": asdict(self.cfg), "epochs_done": self.epoch + 1, "best": best_row["correct"],
                               "best_epoch": best_row["epoch"], "best_metrics": best_row, "seconds": seconds,
                               "history": history})


def _plain(value):
    """``value`` as torch.load(weights_only=True) reads it back: tensors, and Python's own numbers,
    strings, lists and dicts (fastai keeps hyper-parameters as numpy floats in an L)."""
    if isinstance(value, torch.Tensor) or value is None:
        return value
    for kind in (bool, int, float, str):  # numpy's float64 is a float, but pickles as numpy's
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    if hasattr(value, "__iter__"):  # fastcore's L
        return [_plain(v) for v in value]
    raise TypeError(f"optimiser state of type {type(value).__name__} has no plain form")


def plain_opt_state(opt) -> dict:
    """fastai's optimiser state (per parameter: averages, step count; per group: hyper-parameters)
    as tensors and plain values."""
    sd = opt.state_dict()
    return {"state": _plain(list(sd["state"])), "hypers": _plain(list(sd["hypers"]))}


def read_checkpoint(path: Path, device) -> dict:
    """checkpoint.pth's weights and optimiser state, read as tensors and plain values only: a file
    that needs any other object to load (which unpickling would construct, running its code) is
    refused, as is one that is not a checkpoint of this tool (ValueError naming the file)."""
    if not path.is_file():  # a FIFO would never end a read; a folder is no checkpoint
        raise ValueError(f"--resume: {path} is missing or not a file; the run cannot be continued")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL ([\w.]+)", str(e))  # what the file asks to construct, as torch names it
        if named:  # beyond tensors and plain values: unpickling would call it, running its code
            raise ValueError(f"--resume: {path} holds more than weights and plain values (it names "
                             f"{named[1][:100]}); it is not loaded, as loading could run code from it") from None
        raise ValueError(f"--resume: {path} cannot be read as a checkpoint (not a torch file of tensors "
                         "and plain values)") from None
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file: one line naming it
        raise ValueError(f"--resume: {path} cannot be read as a checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    opt = ck.get("opt") if isinstance(ck, dict) else None
    if not (isinstance(ck.get("model") if isinstance(ck, dict) else None, dict) and isinstance(opt, dict)
            and isinstance(opt.get("state"), list) and isinstance(opt.get("hypers"), list)):
        raise ValueError(f"--resume: {path} is not a stampcheck pretrain checkpoint (model and opt)")
    return ck


def load_checkpoint(learn: Learner, ck: dict, path: Path) -> None:
    """Weights and optimiser state of ``ck`` into ``learn``; ValueError when they do not fit it."""
    from fastcore.foundation import L

    try:
        learn.model.load_state_dict(ck["model"])
        learn.create_opt()
        params = sum(len(group) for group in learn.opt.param_lists)
        if len(ck["opt"]["hypers"]) != len(learn.opt.param_lists) or len(ck["opt"]["state"]) != params:
            raise RuntimeError("the optimiser state has another number of parameters")
        learn.opt.load_state_dict({"state": ck["opt"]["state"], "hypers": L(ck["opt"]["hypers"])})
    except (RuntimeError, KeyError, TypeError) as e:
        raise ValueError(f"--resume: {path} does not fit the run's network ({str(e).splitlines()[0][:200]})") from None


def read_state(out: Path) -> dict:
    path = out / "state.json"
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read as a pretraining run's state ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a pretraining run's state")
    return state


def write_state(out: Path, state: dict) -> None:
    atomic_write_text(out / "state.json", json.dumps(state, indent=2))


def save_base(model, path: Path) -> None:
    """fp16 weights: half the bytes, and fine-tuning starts in fp32 from them all the same. The
    BatchNorm running statistics stay fp32: a variance past fp16's 65504 (the neck's reached 129000)
    would be stored as inf, and an inf running variance never decays, silencing that channel in
    every model trained from the base."""
    buffers = {name for name, _ in model.named_buffers()}
    state = {k: (v.detach().cpu().half() if v.is_floating_point() and k not in buffers else v.detach().cpu())
             for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
