"""Training to the clock: timing a learner's first batches, and a one-cycle schedule that follows
the clock (fastai callbacks, shared by the detector's training and the verifier's)."""

from __future__ import annotations

import time

import numpy as np
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelValidException


class BatchTimer(Callback):
    """Times ``n`` training and ``n`` valid batches (loading included, the first of each left out:
    it pays for starting loader workers), then ends the epoch."""

    order = 95

    def __init__(self, n: int = 4):
        self.n, self.train_times, self.valid_times, self.mark = n, [], [], None

    def before_train(self):
        self.mark = None

    before_validate = before_train

    def after_batch(self):
        now = time.perf_counter()
        times = self.train_times if self.training else self.valid_times
        if self.mark is not None:
            times.append(now - self.mark)
        self.mark = now
        if len(times) >= self.n:
            raise CancelTrainException() if self.training else CancelValidException()


def batch_seconds(learn) -> tuple[float, float]:
    """Median seconds of a training and of a valid batch of ``learn`` on this machine, from its first
    batches (real steps at learning rate 0); its weights, batch-norm statistics included, are left
    as they were, and so is its optimiser (none)."""
    state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    timer = BatchTimer()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=0.0, cbs=[timer])
    learn.model.load_state_dict(state)
    learn.opt = None
    return (float(np.median(timer.train_times)) if timer.train_times else 0.0,
            float(np.median(timer.valid_times)) if timer.valid_times else 0.0)


class TimeBudget(Callback):
    """--minutes: the one-cycle schedule follows the clock, not the batch count, so that the learning
    rate has come down when the time is up however the machine's speed changes (a shared machine
    slowing mid-run would otherwise be cut at a high rate, far from the end of the cycle). When the
    time is up the training part of the epoch ends, its valid pass still runs, and the fit ends."""

    order = 55  # before ParamScheduler (60) reads pct_train, after the Recorder (50) hears of a cancel

    def __init__(self, seconds: float, clock=time.time, reserved: float = 0.0, valid_s: float = 0.0,
                 finish_per_valid: float = 0.0):
        """``reserved``: seconds the plan set aside for work between it and the fit (lr_find).
        ``valid_s``: the plan's valid pass; ``finish_per_valid``: the valid passes' worth of work
        after the fit (choosing the size, export). A valid pass that takes longer than planned (a
        machine slowed by other work) moves the end of training earlier by what it and the work
        after the fit will take longer; a faster one gives the time back."""
        self.seconds, self.clock, self.over, self.reserved = seconds, clock, False, reserved
        self.valid_s, self.finish_per_valid, self.valid_start = valid_s, finish_per_valid, None

    def spent_before_fit(self, seconds: float) -> None:
        """That work took ``seconds``: the fit gets what the reserve left, or pays what it lacked."""
        self.seconds -= seconds - self.reserved

    def before_fit(self):
        self.start, self.over = self.clock(), False

    def before_epoch(self):
        if self.over:  # every after_epoch of the last epoch has run (KeepBest has seen it)
            raise CancelFitException()

    def after_cancel_train(self):
        # the Recorder leaves a cancelled epoch's train loss out of its row, which shifts every
        # metric's column; this epoch trained, only shorter
        self.recorder.cancel_train = False

    def before_validate(self):
        if self.valid_s:  # only a planned run reads the clock here (a test's clock counts its reads)
            self.valid_start = self.clock()

    def after_validate(self):
        if self.valid_start is None or not self.valid_s:
            return
        took = self.clock() - self.valid_start
        # the last epoch's valid pass and the finishing passes will take as long as this one
        self.seconds -= (took - self.valid_s) * (1 + self.finish_per_valid)
        self.valid_s, self.valid_start = took, None

    def progress(self) -> float:
        return (self.clock() - self.start) / self.seconds

    def before_batch(self):
        if self.training:
            self.learn.pct_train = max(self.learn.pct_train, min(1.0, self.progress()))

    def after_batch(self):
        # checked after a batch, not before one: a batch cancelled at its start skips every
        # after_batch, and CpuAutocast would stay switched on for the rest of the process
        if self.training and self.progress() >= 1:
            self.over = True
            raise CancelTrainException()
