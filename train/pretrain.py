"""`stampcheck pretrain`: teach one StampNet what any ink stamp looks like, on images composed on
the fly, so that every user's training starts from a detector that already finds stamps and only
has to learn which one is theirs.

PRETRAIN_DIR gets ``checkpoint.pth`` (weights and optimiser, after every epoch: ``--resume``
continues from the last finished epoch, schedule position included), ``state.json``,
``base.pth`` (the best epoch: fp16 weights, fp32 BatchNorm statistics; the file that ships in data/weights/) and
``card.md`` (the model card: command, data, time, hardware, metrics, sha256). PRETRAIN_DIR is new,
empty or an earlier pretrain's (its ``.stampcheck`` marker): a folder of anyone else's is refused.

``checkpoint.pth`` holds tensors and plain values only, and is read as such (``weights_only``): a
file that needs anything else to load is refused, never run.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import platform
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.torch_core import set_seed

from stampcheck.atomic import atomic_write_bytes, atomic_write_text, remove_own_partials
from stampcheck.device import autocast_dtype, cpu_count, pick_device
from stampcheck.files import read_bytes
from stampcheck.paths import MARKER, OutputLock, check_output, claim_output
from stampcheck.train.callbacks import EpochLog, StopOnInterrupt
from stampcheck.train.checkpoint import Checkpoint, load_checkpoint, read_checkpoint, read_state, write_state
from stampcheck.train.learner import make_folder, remove_made, stamp_learner
from stampcheck.train.model import base_path, build_model, load_base
from stampcheck.train.config import PretrainConfig
from stampcheck.train.data import check_crop
from stampcheck.train.synthetic import DESIGNS, Loader, SyntheticStamps, collate, draw_designs, load_backgrounds

COMMAND = "pretrain"  # the marker's name for a pretraining folder
OWN_FILES = ("checkpoint.pth", "state.json", "base.pth", "card.md")
VALID_OFFSET = 10 ** 9  # valid images are indices no training epoch reaches


# The settings a run may have, whether from the command line or a state.json written by hand: a
# size of 999999 would take the machine's memory, a NaN rate would train NaN and exit 0.
LIMITS = {"size": (64, 1024), "crop": (0, 1024), "epochs": (1, 100_000), "epoch_images": (8, 10_000_000),
          "valid_images": (8, 1_000_000), "bs": (1, 4096), "lr": (1e-6, 1.0), "workers": (0, 256)}


def config_problem(cfg: PretrainConfig) -> str | None:
    """What is wrong with ``cfg``'s numbers (LIMITS), or None."""
    for name, (low, high) in LIMITS.items():
        value = getattr(cfg, name)
        if value is None and name in ("crop", "workers"):
            continue
        kind = float if name == "lr" else int
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            return f"{name} must be a {'number' if kind is float else 'whole number'}, not {value!r}"
        if not low <= value <= high:  # NaN fails both
            return f"{name} must be from {low:g} to {high:g}, not {value!r}"
    return None


class EpochOffset(Callback):
    """Every epoch composes new images: epoch e reads indices e * epoch_images onwards."""

    order = 0

    def __init__(self, ds: SyntheticStamps):
        self.ds = ds

    def before_epoch(self):
        self.ds.offset = self.epoch * self.ds.length


def pretrain(out: Path, cfg: PretrainConfig, resume: bool = False, epochs_changed: int | None = None,
             log=print) -> dict:
    """Train (or go on training) the class-agnostic base detector into ``out``; ``epochs_changed``
    gives a resumed run another length. The result's ``interrupted``: Ctrl-C (or SIGTERM) ended it
    after an epoch, whose files are written; before the first, KeyboardInterrupt, and what this run
    made is removed again."""
    check_output(Path(out), COMMAND)  # before anything there is read or replaced; a link as given is refused
    out = Path(out).resolve()
    state, found = read_state(out), read_state(out)  # found: as read, to be asked again once out is held
    if state and not resume:
        raise ValueError(f"{out} holds a pretraining run ({state.get('epochs_done', 0)} epochs); "
                         "pass --resume to continue it, or choose another --out")
    if resume:
        if not state:
            raise ValueError(f"--resume: {out} holds no pretraining run (no state.json)")
        try:  # a state.json edited by hand: one line, not a traceback
            saved = PretrainConfig(**state["config"])
            state["epochs_done"] = int(state["epochs_done"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--resume: {out / 'state.json'} is not a pretraining run's state ({e!r})") from None
        # other windows or another start would make it another run than its card describes
        if (cfg.crop and cfg.crop != saved.crop) or (cfg.init and cfg.init != saved.init):
            raise ValueError(f"--resume keeps the run's own settings (--crop {saved.crop}, --init {saved.init}); "
                             "leave --crop and --init out, or start another --out")
        if epochs_changed and epochs_changed != saved.epochs:  # a run that turned out slower or faster than planned: the schedule
            # stretches or shrinks to the new length, its position becoming the done epochs' share
            if epochs_changed <= state["epochs_done"]:
                raise ValueError(f"--epochs {epochs_changed}: the run has done {state['epochs_done']} already")
            log(f"resuming with {epochs_changed} epochs instead of {saved.epochs}")
            # the card must tell how the schedule really ran: a lengthened run is a warm restart
            state.setdefault("planned", saved.epochs)
            state["lengthened"] = state.get("lengthened", []) + [{"at_epoch": state["epochs_done"], "to": epochs_changed}]
            saved.epochs = epochs_changed
            state = {**state, "config": asdict(saved)}  # written once the checkpoint has been read
        log(f"resuming {out} with its own settings (arch {saved.arch}, size {saved.size}"
            + (f" on {saved.crop} px windows" if saved.crop else "") + (f", started from {saved.init}" if saved.init else "")
            + f", {saved.epochs} epochs of {saved.epoch_images} images)")
        cfg = saved
    problem = config_problem(cfg)
    if problem:
        where = f"--resume: {out / 'state.json'}: " if resume else ""
        raise ValueError(f"{where}{problem}")
    set_seed(cfg.seed)
    check_crop(cfg.crop, cfg.size)
    model, _ = build_model(cfg.arch, 1, pretrained="none")
    if cfg.init and not resume:  # checked before the backgrounds are read (minutes for thousands of photos)
        load_base(model, Path(cfg.init))
        cfg.init_sha256 = hashlib.sha256(read_bytes(cfg.init)).hexdigest()
    device = pick_device(cfg.device)
    ck = read_checkpoint(out / "checkpoint.pth", device) if resume else None
    workers = cfg.workers if cfg.workers is not None else (min(16, cpu_count()) if device.type == "cuda"
                                                           else max(1, cpu_count() - 1))
    backgrounds = load_backgrounds([Path(b) for b in cfg.backgrounds], int(cfg.size * 1.6))
    if cfg.backgrounds and not backgrounds:
        raise ValueError(f"no usable photo in {', '.join(cfg.backgrounds)}")
    # a curriculum over the first 40% of the run: clear stamps first, the full looks by then (a
    # run that starts from a base already finds stamps and needs none)
    clear_until = 0 if cfg.init else int(cfg.epochs * cfg.epoch_images * 0.4)
    train_ds = SyntheticStamps(cfg.epoch_images, cfg.size, cfg.seed, backgrounds, clear_until=clear_until,
                               crop=cfg.crop)
    valid_ds = SyntheticStamps(cfg.valid_images, cfg.size, cfg.seed, backgrounds, offset=VALID_OFFSET)
    kw = dict(batch_size=cfg.bs, num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
              persistent_workers=False)
    # Not shuffled: the indices are random images already, and EpochOffset moves them each epoch.
    dls = DataLoaders(Loader(train_ds, shuffle=False, drop_last=True, **kw), Loader(valid_ds, **kw), device=device)
    learn = stamp_learner(dls, model, 1, out, device, cfg.mixed_precision)
    start_epoch = 0
    if resume:
        load_checkpoint(learn, ck, out / "checkpoint.pth")
        start_epoch = state["epochs_done"]
    # every input is checked: the claim point, where this run begins to write into out (made only
    # now: a bad --init, --backgrounds or checkpoint leaves no folder behind)
    made, marked = make_folder(out), not (out / MARKER).exists()
    claim_output(out, COMMAND)
    with OutputLock(out, COMMAND) as hold:  # held by this run alone to its end; by the system if it is killed
        try:
            if read_state(out) != found:  # another run wrote it while this one read its inputs
                raise ValueError(f"another pretrain run wrote {out} while this one read its inputs; look at it "
                                 "again (--resume continues it), or choose another --out")
            return _run(learn, out, cfg, state if resume else {}, start_epoch, train_ds, device, backgrounds, workers,
                        log)
        except BaseException:
            if not read_state(out):  # no epoch ended: nothing of this run's to keep
                if marked:
                    hold.remove()  # the marker, and the lock with it (in the order each system allows)
                remove_made(made)
            raise


def _run(learn: Learner, out: Path, cfg: PretrainConfig, state: dict, start_epoch: int, train_ds, device,
         backgrounds: list, workers: int, log) -> dict:
    """pretrain() from the claim point on: the epochs, then the card."""
    remove_own_partials(out, "|".join(map(re.escape, OWN_FILES)))  # what a killed run left mid-write
    if state:
        write_state(out, state)  # a resumed run's, with its new length
    if start_epoch >= cfg.epochs:
        log(f"{out}: all {cfg.epochs} epochs are done; writing the card")
        return {**write_card(out, cfg, device, backgrounds), "interrupted": False}
    dtype = autocast_dtype(device, cfg.mixed_precision)
    windows = f" on {cfg.crop} px windows" if cfg.crop else ""
    start = f", starting from {cfg.init}" if cfg.init else ""
    log(f"pretraining {cfg.arch} at {cfg.size} px{windows}{start} on {device} ({str(dtype).removeprefix('torch.') if dtype else 'fp32'}): "
        f"epochs {start_epoch + 1}-{cfg.epochs} of {cfg.epoch_images} new images each, "
        f"{len(backgrounds)} real backgrounds, {workers} loader workers")
    # forked loader workers share the designs the parent drew (spawned ones, as on macOS, would not);
    # worth it for a run that would draw them all anyway
    if workers and multiprocessing.get_start_method() == "fork" and \
            (cfg.epochs - start_epoch) * cfg.epoch_images >= DESIGNS:
        began = time.time()
        draw_designs()
        log(f"drew the {DESIGNS} seal designs once, for every loader worker ({time.time() - began:.0f} s)")
    stop = StopOnInterrupt()
    cbs = [EpochOffset(train_ds), Checkpoint(out, cfg, start_epoch, time.time()), stop]
    piped = not sys.stdout.isatty()
    if piped:
        cbs.append(EpochLog(log, start_epoch))
    with stop.loader_workers(), (learn.no_bar() if piped else _nothing()):
        learn.fit_one_cycle(cfg.epochs, cfg.lr, cbs=cbs, start_epoch=start_epoch)
    if stop.requested and not read_state(out):
        raise KeyboardInterrupt  # Ctrl-C before the first epoch ended: pretrain() removes what it made
    if stop.requested:
        log(f"interrupted after epoch {read_state(out)['epochs_done']}; --resume continues the run")
    return {**write_card(out, cfg, device, backgrounds), "interrupted": stop.requested}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def ship(out: Path, log=print) -> Path:
    """Copy a finished run's base.pth and card into data/weights/ as the base `train` starts from
    (the card names the shipped file; its sha256 is the same bytes')."""
    state = read_state(out)
    if not state or not (out / "base.pth").is_file() or not (out / "card.md").is_file():
        raise ValueError(f"{out} holds no finished pretraining run (state.json, base.pth, card.md)")
    dest = base_path(state["config"]["arch"])
    data = (out / "base.pth").read_bytes()
    atomic_write_bytes(dest, data)
    card = (out / "card.md").read_text().replace("`base.pth`", f"`{dest.name}`")
    atomic_write_text(dest.with_suffix(".md"), card)
    log(f"shipped {dest} ({len(data) / 2 ** 20:.1f} MB) and {dest.with_suffix('.md').name}")
    return dest


def write_card(out: Path, cfg: PretrainConfig, device, backgrounds: list) -> dict:
    """card.md beside base.pth: what a user needs to trust or reproduce the file."""
    state = read_state(out)
    base = out / "base.pth"
    if not base.is_file():
        raise RuntimeError("pretraining stopped before its first epoch ended; no base.pth was written")
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    m = state.get("best_metrics", {})
    hours = state.get("seconds", 0.0) / 3600
    cpu = platform.processor() or platform.machine()
    hardware = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({cpu}, {cpu_count()} cores)"
    planned = state.get("planned", cfg.epochs)
    command = ("stampcheck pretrain --out DIR --arch {a} --size {s} --epochs {e} --epoch-images {n} --bs {b} "
               "--lr {lr} --seed {seed}").format(a=cfg.arch, s=cfg.size, e=planned, n=cfg.epoch_images, b=cfg.bs,
                                                  lr=cfg.lr, seed=cfg.seed)
    command += f" --crop {cfg.crop}" if cfg.crop else ""
    command += f" --init {cfg.init}" if cfg.init else ""
    command += "".join(f" --backgrounds {b}" for b in cfg.backgrounds)
    start = (f"- started from: `{cfg.init}` (sha256 `{cfg.init_sha256}`), without the clear-stamp curriculum\n"
             if cfg.init else "")
    schedule = f"fastai one-cycle over {planned} epochs" + "".join(
        f"; after epoch {x['at_epoch']} lengthened to {x['to']} (`--resume --epochs {x['to']}`: a warm restart)"
        for x in state.get("lengthened", []))
    windows = f", trained on {cfg.crop} px windows (validated on the whole image)" if cfg.crop else ""
    card = f"""# StampNet base detector: {cfg.arch}, {cfg.size} px{windows}

Finds any ink stamp (one class, "stamp"); `stampcheck train` starts from it and learns which stamp
is yours, the other seals becoming its hard negatives.

- file: `{base.name}` (state dict of `stampcheck.train.model.StampNet`, 1 class: fp16 weights, fp32 BatchNorm statistics)
- sha256: `{sha}`
- command: `{command}`
- schedule: {schedule}
{start}- data: images composed on the fly (`train/synthetic.py`): generated seal designs
  (`compose/seals.py`) with compose's looks on built-in scenes and {len(backgrounds)} real photos
  ({', '.join(cfg.backgrounds) or 'none'}); {state.get('epochs_done', 0)} epochs of {cfg.epoch_images} images
- training time: {hours:.2f} h on {hardware}
- best epoch: {state.get('best_epoch')}; valid ({cfg.valid_images} composed images, at that epoch's best
  threshold, {m.get('threshold', float('nan')):.2f}):
  accuracy {m.get('accuracy', float('nan')):.3f}, precision {m.get('precision', float('nan')):.3f},
  recall {m.get('recall', float('nan')):.3f}, mean IoU {m.get('mean_iou', float('nan')):.3f},
  IoU >= 0.5 {m.get('iou50', float('nan')):.3f}, correct {m.get('correct', float('nan')):.3f}
"""
    atomic_write_text(out / "card.md", card)
    return {"sha256": sha, "state": state}
