"""Train one StampNet with fastai and write everything `qa` and a fastai user need to a model folder.

MODEL_DIR gets: ``model.pth`` + ``config.json`` (the best epoch so far, written as soon as it is
reached, so an interrupted run leaves a usable model), and at the end ``model.pkl`` (fastai
export), ``metrics.json``, ``curves.png``, ``samples.png`` and, with --lr-find, ``lr_find.png``.
Those files only: a folder that already holds them is replaced only when asked (``overwrite``),
and only once the new run's first epoch is there to take their place.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle / lr_find)
import numpy as np
import torch
from PIL import Image
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.learner import Learner
from fastai.optimizer import Adam
from fastai.torch_core import rank_distrib

from stampcheck.atomic import remove_own_partials
from stampcheck.dataset import IMAGES_DIR, ImageLabels
from stampcheck.device import autocast_dtype, cpu_count, pick_device
from stampcheck.engine.config import ModelError
from stampcheck.engine.network import load_model_dir
from stampcheck.files import read_text
from stampcheck.paths import MARKER, lock_output, refuse_held, refuse_overlap
from stampcheck.train.budget import TimeBudget, batch_seconds
from stampcheck.train.callbacks import MONITOR, EpochLog, KeepBest, StopOnInterrupt
from stampcheck.train.config import LR, TrainConfig
from stampcheck.train.data import MEAN, STD, pad_boxes, stamp_datablock, stamp_dataloaders
from stampcheck.train.detect import StampLoss
from stampcheck.train.distributed import distributed_training, leave_process_group
from stampcheck.train.finish import LEARNER_NAME, add_verifier, finish
from stampcheck.train.metrics import detection_metrics
from stampcheck.train.model import build_model
from stampcheck.train.plots import current_figure_png
from stampcheck.train.precision import set_precision
from stampcheck.train.views import view_sizes

VERIFIER_SHARE = 0.3  # of --minutes: mining crops for the verifier, training and judging it

# On a CPU the model sees the photo at CPU_SIZE but trains on CPU_CROP windows of it: a step costs
# CPU_CROP pixels while small stamps keep CPU_SIZE's (how many pixels a stamp gets, not how many
# steps, bounds a 15-minute training; see BENCHMARKS.md). On a GPU more pixels cost little.
CPU_SIZE, CPU_CROP, GPU_SIZE = 256, 160, 256
OUTPUTS = ("model.pth", "config.json", LEARNER_NAME, "metrics.json", "curves.png", "samples.png", "lr_find.png",
           "verifier.pth")


def make_folder(out: Path) -> list[Path]:
    """``out`` made with its missing parents; the folders this made, ``out`` first, for
    :func:`remove_made`."""
    made, folder = [], Path(out)
    while not os.path.lexists(folder):
        made.append(folder)
        folder = folder.parent
    Path(out).mkdir(parents=True, exist_ok=True)
    return made


def remove_made(made: list[Path], *own: Path) -> None:
    """Undo :func:`make_folder` for a run that ends with nothing to keep: its ``own`` files, then
    each folder it made, while empty (what anyone else put there stays, and so does its folder)."""
    for f in own:
        if f.is_file() and not f.is_symlink():
            f.unlink()
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            return


def build_learner(dataset: Path, out: Path, cfg: TrainConfig, log=print):
    """DataLoaders, StampNet and Learner on the chosen device and precision; also used by bench/train.py."""
    from fastai.torch_core import set_seed

    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    if cfg.size is None:
        cfg.size = GPU_SIZE if device.type == "cuda" else CPU_SIZE
        if cfg.crop is None and device.type != "cuda":
            cfg.crop = CPU_CROP
    cfg.crop = cfg.crop or None
    workers = cfg.workers if cfg.workers is not None else (min(8, cpu_count()) if device.type == "cuda"
                                                           else max(0, min(2, cpu_count() - 1)))
    dls, classes = stamp_dataloaders(dataset, cfg.size, cfg.bs, workers, device, cfg.augment, cfg.crop, log,
                                     cfg.valid_images)
    if cfg.init and cfg.weights:
        raise ValueError("--init (an earlier stampcheck model) and --weights (ResNet weights) exclude each other")
    if cfg.init:
        model, weights_source = model_from_folder(Path(cfg.init), cfg.arch, classes)
    else:
        model, weights_source = build_model(cfg.arch, len(classes), cfg.pretrained,
                                            Path(cfg.weights) if cfg.weights else None, log=log)
    learn = stamp_learner(dls, model, len(classes), out, device, cfg.mixed_precision)
    return learn, dls, classes, device, weights_source


def stamp_learner(dls, model, n_classes: int, out: Path, device, mixed_precision: bool) -> Learner:
    """The detector's Learner, for training and pretraining alike: its loss, Adam, its metrics, files
    under ``out``, and the precision the device runs natively."""
    learn = Learner(dls, model, loss_func=StampLoss(n_classes), opt_func=Adam, metrics=detection_metrics(n_classes),
                    path=out, model_dir=".")
    set_precision(learn, device, mixed_precision)
    return learn


def learner_for(model, config: dict, root: Path) -> Learner:
    """A Learner of ``model`` to export without its training data: the DataBlock needs an image per
    split to set itself up, so a blank one is written in ``root`` (the export keeps none of it)."""
    size, classes, cpu = config["size"], config["classes"], torch.device("cpu")
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), "white").save(root / IMAGES_DIR / "blank.png")
    items = [ImageLabels("blank.png", split, "") for split in ("train", "valid")]
    dls = stamp_datablock(root, classes, size, augment=False).dataloaders(
        items, bs=1, num_workers=0, device=cpu, before_batch=pad_boxes)
    return stamp_learner(dls, model, len(classes), root, cpu, mixed_precision=False)


def plan_epochs(learn: Learner, budget: float, size: int, log=print, before_fit: int = 0) -> tuple[int, TimeBudget]:
    """Epochs (or, below one, the share of an epoch) that fit ``budget`` seconds, measured on this
    machine's first batches, as a one-cycle schedule must know its length before it starts. ``size``:
    the training size, which the valid passes after training start from; ``before_fit``: training
    batches run between the plan and the fit (lr_find's), whose time the plan sets aside."""
    t0 = time.time()
    t_train, t_valid = batch_seconds(learn)
    n_train, n_valid = len(learn.dls.train), len(learn.dls.valid)
    valid_s = n_valid * t_valid
    # the best epoch's valid pass at each size it may predict at (as pixels cost), export, plots
    finish_per_valid = 0.5 + sum((v / size) ** 2 for v in view_sizes(size))
    finish_s = valid_s * finish_per_valid + 10
    reserved = before_fit * t_train
    left = budget - (time.time() - t0) - finish_s - reserved
    epoch_s = n_train * t_train + valid_s
    if left <= valid_s + 4 * t_train:
        raise ValueError(f"--minutes leaves {max(0.0, budget):.0f} s after setting up, too little to train: one valid "
                         f"pass takes {valid_s:.0f} s here and finishing ~{finish_s:.0f} s; give more minutes")
    epochs = int(left // epoch_s)
    if epochs >= 1:
        log(f"time: {t_train:.2f} s a training batch and {valid_s:.0f} s a valid pass here, so about {epochs} "
            f"epoch{'s' if epochs > 1 else ''} of {n_train} batches fit the {left / 60:.1f} min of training (the clock ends it, not this "
            f"count), then ~{finish_s:.0f} s to finish")
    else:  # not even one epoch: train on the share of it that fits
        batches = max(4, int((left - valid_s) // t_train))
        learn.dls.train.n = batches * learn.dls.train.bs
        epochs = 1
        log(f"time: {t_train:.2f} s a training batch here, so one epoch of {batches} of the {n_train} batches "
            f"(about {(batches * t_train + valid_s) / 60:.1f} min), then ~{finish_s:.0f} s to finish")
    # The clock ends training, not the epoch count: room for 4x the estimate, as the first batches
    # time a machine that may speed up (a loader warming up, a neighbour's job ending) or slow down.
    return 4 * epochs + 1, TimeBudget(left - valid_s + 0.03 * budget, reserved=reserved, valid_s=valid_s,
                                      finish_per_valid=finish_per_valid)


def model_from_folder(model_dir: Path, arch: str, classes: list[str]):
    """The network of an earlier ``stampcheck train`` run, to go on training it on new data."""
    config, model = load_model_dir(model_dir)
    if config.get("arch") != arch or config.get("classes") != classes:
        raise ModelError(f"--init {model_dir}: that model is {config.get('arch')} for classes "
                         f"{config.get('classes')}; this run is {arch} for {classes}")
    for bn in model.modules():
        # models trained from the first shipped base carry its inf running variances, which never
        # decay; measured afresh, the first batches re-estimate them
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and not torch.isfinite(bn.running_var).all():
            bn.reset_running_stats()
    return model, f"the model in {model_dir}"


def earlier_model(dataset: Path, out: Path, cfg: TrainConfig, overwrite: bool) -> list[Path]:
    """The files of an earlier model in ``out``, which this run may replace; raise ValueError when
    ``out`` overlaps an input, or holds a model and ``overwrite`` was not given."""
    refuse_overlap(out, [dataset, cfg.init, cfg.weights])
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    refuse_held(out)  # a run writing there now: said at once, not after the dataset has loaded
    return model_files(out, overwrite)


def model_files(out: Path, overwrite: bool) -> list[Path]:
    """:func:`earlier_model`'s files, asked again once this run holds ``out``: another run may have
    written a model there while this one was loading its dataset."""
    earlier = [out / name for name in OUTPUTS if (out / name).exists()]
    if not earlier:
        return []
    names = ", ".join(p.name for p in earlier)
    if not overwrite:
        raise ValueError(f"--out {out} already holds a model ({names}); pass --overwrite to replace it, "
                         "or choose another --out")
    try:
        config = json.loads(read_text(out / "config.json"))  # a named pipe there: not ours, never blocking
        ours = isinstance(config, dict) and {"arch", "classes"} <= set(config)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ValueError(f"--out {out} holds {names} but no stampcheck model (its config.json); "
                         "choose another --out")
    return earlier


def train(dataset: Path, out: Path, cfg: TrainConfig, log=print, overwrite: bool = False) -> dict:
    """Train on ``dataset`` (the dataset contract) and fill ``out``; return metrics.json's content.

    Every input (dataset, --init, --weights, --minutes) is checked before ``out`` is touched. An
    earlier model there is replaced only with ``overwrite``, and only once this run's first epoch is
    written in its place (KeepBest), so the folder never mixes two runs; nothing else there is
    touched. A run that ends before its first epoch leaves the folder as it found it (interrupted:
    KeyboardInterrupt); one interrupted later returns, its ``interrupted`` true."""
    started = time.time()
    out = Path(out).resolve()  # fastai joins learn.path with relative names; keep every path absolute
    if rank_distrib() == 0:  # said before the dataset loads, asked again once out is held
        earlier_model(dataset, out, cfg, overwrite)
    learn, dls, classes, device, weights_source = build_learner(dataset, out, cfg, log)
    dtype = autocast_dtype(device, cfg.mixed_precision)
    precision = f"{str(dtype).removeprefix('torch.')} autocast" if dtype else "fp32"
    log(f"{cfg.arch} at {cfg.size} px on {device} ({precision}), starting from {weights_source}; "
        f"{len(dls.train_ds)} train / {len(dls.valid_ds)} valid images"
        + (f"; training on {cfg.crop} px windows of the {cfg.size} px image" if cfg.crop else ""))
    # "size" is always the size the model predicts at: its training size (train.size) until finish chooses
    config = {"arch": cfg.arch, "size": cfg.size, "classes": classes, "mean": list(MEAN), "std": list(STD),
              "threshold": 0.5, "weights_source": weights_source, "train": asdict(cfg),
              "dataset": str(Path(dataset).resolve())}
    epochs, budget = cfg.epochs, None
    # with a verifier, the detector gets (1 - SHARE) of the minutes and the verifier the rest
    detector_share = 1 - VERIFIER_SHARE if cfg.verifier else 1.0
    if cfg.minutes:
        epochs, budget = plan_epochs(learn, cfg.minutes * 60 * detector_share - (time.time() - started),
                                     cfg.size, log, before_fit=LR_FIND_BATCHES if cfg.lr_find else 0)
    # Every input is checked: the claim point, from where on this run writes into out (lr_find's
    # temporary weights first), held by it alone to the end (the lock: one process, the first,
    # holds it for a distributed run); until its first epoch, what it made goes again however it ends.
    made = make_folder(out)
    marked = rank_distrib() == 0 and not os.path.lexists(out / MARKER)
    with lock_output(out, "train") if rank_distrib() == 0 else nullcontext() as hold:
        keep = KeepBest(out, config)
        try:
            if rank_distrib() == 0:
                keep.replaces = model_files(out, overwrite)
                remove_own_partials(out, "|".join(map(re.escape, OUTPUTS)))  # what a killed run left mid-write
            interrupted, train_seconds = _fit(learn, cfg, keep, budget, epochs, device, log)
        except BaseException:
            if keep.best_epoch < 0:
                if marked:
                    hold.remove()  # the marker, and the lock with it (in the order each system allows)
                remove_made(made)
            raise
        if rank_distrib() != 0:
            leave_process_group()
            return {}
        result = finish(learn, out, dataset, classes, dls, device, train_seconds, interrupted, log)
        leave_process_group()
        if cfg.verifier and not interrupted:
            seconds = cfg.minutes * 60 - (time.time() - started) if cfg.minutes else None
            result = add_verifier(out, dataset, dls, classes, device, seconds, cfg, log)
        return result


LR_FIND_BATCHES = 100  # fastai's lr_find: its steps at most


def _fit(learn: Learner, cfg: TrainConfig, keep: KeepBest, budget: TimeBudget | None, epochs: int, device,
         log) -> tuple[bool, float]:
    """lr_find when asked, then the epochs; whether Ctrl-C (or SIGTERM) ended them, and their
    seconds. KeyboardInterrupt when it came before the first epoch was kept."""
    lr = cfg.lr
    piped = not sys.stdout.isatty()
    quiet_bar = learn.no_bar if piped else nullcontext
    stop = StopOnInterrupt()
    if cfg.lr_find:
        began = time.time()
        try:
            with quiet_bar(), learn.added_cbs(stop):  # Ctrl-C ends it as a fit: weights restored, its files gone
                suggestion = learn.lr_find(show_plot=True, num_it=LR_FIND_BATCHES)
        except Exception:  # cut short by Ctrl-C, its curve may be too short to suggest: an interruption, no bug
            if not stop.requested:
                raise
        if stop.requested:
            raise KeyboardInterrupt
        # written with the first epoch: until then the folder is the earlier model's
        keep.first_files["lr_find.png"] = current_figure_png()
        lr = float(suggestion.valley)
        log(f"lr_find suggests {lr:.2e}")
        if budget is not None:
            budget.spent_before_fit(time.time() - began)
    lr = lr or LR
    keep.config = {**keep.config, "lr": lr}
    cbs = [keep, stop]
    if cfg.patience:
        cbs.append(EarlyStoppingCallback(monitor=MONITOR, comp=np.greater, patience=cfg.patience))
    if piped:
        cbs.append(EpochLog(log))
    if budget is not None:
        cbs.append(budget)
    start = time.time()
    interrupted = False
    try:
        with stop.loader_workers(), distributed_training(learn, device), quiet_bar():
            learn.fit_one_cycle(epochs, lr, cbs=cbs)
        interrupted = stop.requested
    except KeyboardInterrupt:  # a second Ctrl-C
        interrupted = True
    if rank_distrib() == 0 and keep.best_epoch < 0:
        if interrupted:
            raise KeyboardInterrupt  # train() leaves the folder as it found it
        raise RuntimeError("training ended without an epoch to keep (no valid score); no model was saved")
    if interrupted:
        log("interrupted: keeping the best epoch saved so far")
    return interrupted, time.time() - start
