"""The training loop's behaviour, as fastai callbacks: keep the best epoch on disk as it is reached,
stop cleanly on Ctrl-C, and log one line per epoch where a progress bar cannot be redrawn."""

from __future__ import annotations

import io
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import TrackerCallback
from fastai.torch_core import rank_distrib

from stampcheck.atomic import atomic_path, atomic_write_bytes, json_text
from stampcheck.train.budget import TimeBudget

MONITOR = "correct"  # see stampcheck.train.metrics: share of valid images judged right, presence and box;
# ties (common once it reaches 1.0 on small sets) go to the epoch with the better mean IoU


class KeepBest(TrackerCallback):
    """After each epoch, if MONITOR improved (ties broken by mean IoU), write model.pth and
    config.json (atomically), as fastai's SaveModelCallback saves its best. The first time, the
    earlier model's files (``replaces``) go, and this run's ``first_files`` (name: bytes, made before
    training) are written: until then the folder holds the earlier model as it was, whatever ends the run."""

    order = TrackerCallback.order + 10  # after the Recorder has the epoch's metrics

    def __init__(self, out: Path, config: dict, replaces: list[Path] = (), first_files: dict | None = None):
        super().__init__(monitor=MONITOR, comp=np.greater)
        self.out, self.config, self.best_iou, self.best_epoch = Path(out), config, -math.inf, -1
        self.replaces, self.first_files = list(replaces), dict(first_files or {})

    def after_epoch(self):
        previous = self.best
        super().after_epoch()  # new_best when MONITOR rose; a NaN never is
        row = dict(zip(self.recorder.metric_names[1:-1], self.recorder.values[-1]))
        iou = float(row["mean_iou"])
        tie = not self.new_best and float(row[MONITOR]) == previous and iou > self.best_iou
        if rank_distrib() != 0 or not (self.new_best or tie):
            return
        first = self.best_epoch < 0
        # the threshold it was judged at: a run killed before finish() leaves a model that calls as chosen
        save_weights(self.learn.model, self.out, {**self.config, "best_epoch": self.epoch, MONITOR: float(self.best),
                                                  "threshold": float(row["threshold"])},
                     replaces=self.replaces if first else ())
        self.best_iou, self.best_epoch = iou, self.epoch
        if first:
            for name, data in self.first_files.items():
                atomic_write_bytes(self.out / name, data)


class StopOnInterrupt(Callback):
    """Ctrl-C ends training after the current batch, through fastai's CancelFitException.

    A KeyboardInterrupt raised wherever Python happens to be can land in a bare ``except`` of
    library code (fastai's Recorder has one around each metric's ``.item()``); it is then swallowed
    and the run goes on as if nothing was asked. A handler that only sets a flag cannot be lost.
    A second Ctrl-C interrupts at once."""

    order = 90  # after the other callbacks have finished their batch (autocast, Recorder)

    def __init__(self):
        self.requested, self.previous = False, None

    def before_fit(self):
        if threading.current_thread() is threading.main_thread():  # only there can handlers be set
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def after_batch(self):
        if self.requested:
            raise CancelFitException()

    def after_fit(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    @contextmanager
    def loader_workers(self):
        """A stop sent to the whole process group (a service manager's SIGTERM) ends the data
        loader's workers too: the RuntimeError their end raises here is that interruption, not a
        failure (the signal reached this process first: handlers run in signal-number order)."""
        try:
            yield
        except RuntimeError as e:
            if not (self.requested and "DataLoader worker" in str(e)):
                raise


class EpochLog(Callback):
    """One line per epoch where stdout is a log or a pipe: there fastai's redrawn progress bar
    would pile up into one unreadable line."""

    order = 75

    def __init__(self, log, start_epoch: int = 0, every: float = 60.0):
        """``every``: seconds between lines within an epoch (a log silent for minutes looks hung)."""
        self.log, self.start, self.saved_logger, self.start_epoch = log, 0.0, None, start_epoch
        self.every, self.said = every, 0.0

    def before_fit(self):
        # without fastai's bar its Recorder prints each epoch's raw list; this line replaces it
        self.saved_logger, self.learn.logger = self.learn.logger, _silent

    def after_fit(self):
        self.learn.logger = self.saved_logger

    def before_epoch(self):
        self.start = self.said = time.time()

    def _of(self) -> str:
        budget = next((cb for cb in self.learn.cbs if isinstance(cb, TimeBudget)), None)
        return f" ({budget.progress():.0%} of the training time)" if budget else f"/{self.n_epoch}"

    def after_batch(self):
        now = time.time()
        if rank_distrib() != 0 or now - self.said < self.every or self.epoch < self.start_epoch:
            return
        self.said = now
        part = f"batch {self.iter + 1}/{self.n_iter}" if self.training else f"valid batch {self.iter + 1}/{self.n_iter}"
        self.log(f"  epoch {self.epoch + 1}{self._of()}: {part}, {now - self.start:.0f} s into the epoch")

    def after_epoch(self):
        if rank_distrib() != 0 or self.epoch < self.start_epoch:  # skipped by a resumed run
            return
        names, values = self.recorder.metric_names[1:-1], self.recorder.values[-1]
        figures = "  ".join(f"{n} {float(v):.3f}" for n, v in zip(names, values))
        self.log(f"epoch {self.epoch + 1}{self._of()}  {figures}  ({time.time() - self.start:.0f} s)")


def _silent(*args):
    pass


def unwrap(model):
    return getattr(model, "module", model)


def save_weights(model, out: Path, config: dict, replaces: list[Path] = ()) -> None:
    """model.pth, then config.json, each written whole beside before it takes its place. An earlier
    run's files (``replaces``) go only once both are written: a kill or a full disk before that
    leaves them as they were. Its config.json goes with them, before the weights are replaced, so
    that at no moment does the folder pair one run's weights with the other's config."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}, buf)
    with atomic_path(out / "config.json") as new_config:
        new_config.write_text(json_text(config))
        with atomic_path(out / "model.pth") as new_weights:
            new_weights.write_bytes(buf.getvalue())
            for f in replaces:
                if f.name != "model.pth":  # replaced by the rename
                    f.unlink(missing_ok=True)
