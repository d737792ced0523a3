"""The commands that train: train and pretrain."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stampcheck.train.config import LR, PretrainConfig, TrainConfig
from stampcheck import errors
from stampcheck.progress import report

from stampcheck.app.base import DATA, P, T, app, fail


@app.command("train", short_help="Train the stamp detector (and its second look).")
def train_cmd(
    dataset: Path = typer.Argument(..., metavar="DATASET", help="Dataset folder (from `stampcheck compose`, or labelled by hand)."),
    out: Path = typer.Option(DATA / "model", help="Model folder to write."),
    arch: str = typer.Option(T.arch, help="ResNet body: resnet18, resnet34 or resnet50 (a shipped base "
                             "detector exists for resnet18)."),
    size: Optional[int] = typer.Option(None, min=64, max=2048, help="Input size in pixels (images are squished to "
                                       "size x size). Default: 256 (on a CPU trained on --crop 160 windows)."),
    crop: Optional[int] = typer.Option(None, min=0, help="Train on random crop x crop windows of the size x size "
                                       "image (each holding a stamp whole or not at all); valid and qa see the whole "
                                       "image. Small stamps get the pixels of a large --size at the cost of --crop. Default: 160 on a "
                                       "CPU when --size is not given, none on a GPU; 0: the whole image."),
    epochs: int = typer.Option(T.epochs, min=1, help="Epochs of fit_one_cycle (ignored with --minutes)."),
    minutes: Optional[float] = typer.Option(None, min=0.1, help="Train as well as possible within this many "
                                            "minutes on this machine: the speed of the first batches sets the "
                                            "epochs; the log says what it chose. On a CPU, `--minutes 15` with no "
                                            "other option is the recipe to run."),
    bs: int = typer.Option(T.bs, min=1, help="Batch size."),
    lr: Optional[float] = typer.Option(T.lr, help=f"Peak learning rate (default {LR:g})."),
    lr_find: bool = typer.Option(T.lr_find, "--lr-find", help="Run fastai's lr_find, save lr_find.png, use its suggestion."),
    pretrained: str = typer.Option(T.pretrained, help="Where the weights start: 'base' (the shipped stamp detector, "
                                   "data/weights/), 'imagenet' (torch's cache or a download) or 'none' (from "
                                   "scratch). Missing weights: a warning, then the next of base, imagenet, none."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", hidden=True, help="The same as --pretrained none."),
    weights: Optional[Path] = typer.Option(None, help="A local .pth of torchvision ResNet weights to start from."),
    init: Optional[Path] = typer.Option(None, help="Start from an earlier model folder of the same arch and "
                                        "classes (fine-tune it on new photos or harder looks) instead of ResNet weights."),
    workers: Optional[int] = typer.Option(None, help="Data-loader processes (default: suited to the device)."),
    device: Optional[str] = typer.Option(None, help="cuda, cuda:1, cpu... (default: the GPU when there is one)."),
    patience: int = typer.Option(T.patience, min=0, help="Stop after this many epochs without a better valid 'correct' "
                                 "share (0: never stop early)."),
    seed: int = typer.Option(T.seed, help="Random seed."),
    augment: bool = typer.Option(T.augment, help="Random small rotation, zoom, lighting and warp on each batch (never "
                                 "flips). Composed data already varies its looks; augmenting also slows early learning."),
    mixed_precision: bool = typer.Option(T.mixed_precision, help="Autocast to bf16 (fp16 on GPUs without bf16) where the "
                                         "hardware runs it natively: CUDA GPUs and CPUs with AVX512-BF16 or AMX."),
    verifier: bool = typer.Option(T.verifier, help="Also train the second look: a classifier that judges a close "
                                  "crop of each candidate the detector proposes (which stamp, or none of ours); "
                                  "with --minutes it gets 30% of them. It helps a weak detector; on the 15-minute "
                                  "CPU recipe the detector given all the minutes does as well (BENCHMARKS.md)."),
    valid_images: int = typer.Option(T.valid_images, min=0, help="Judge on a fixed sample of this many valid "
                                               "images (0: all of them): each epoch's valid pass, and "
                                               "the passes that choose the size and thresholds after training, "
                                               "cost one pass over them each."),
    overwrite: bool = typer.Option(False, help="Replace the model already in --out (only the files train writes; "
                                   "anything else there stays), once the new run's first epoch is there to take "
                                   "its place: a refused or interrupted run leaves it as it was."),
):
    """Train one ResNet detector for stamp presence and location; keeps the best epoch by the share of
    valid images judged right (presence, and IoU >= 0.5 for stamped ones)."""
    from stampcheck.dataset import DatasetError
    from stampcheck.train.learner import train

    cfg = TrainConfig(arch=arch, size=size, crop=crop, epochs=epochs, minutes=minutes, bs=bs, lr=lr, lr_find=lr_find,
                      pretrained="none" if no_pretrained else pretrained,
                      weights=str(weights) if weights else None, init=str(init) if init else None, workers=workers, device=device,
                      patience=patience, seed=seed, augment=augment,
                      mixed_precision=mixed_precision, verifier=verifier, valid_images=valid_images)
    try:
        metrics = train(dataset, out, cfg, log=report.print, overwrite=overwrite)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        fail(e)
    except KeyboardInterrupt:  # raised by train (stopped before its first epoch), not by a signal handler of
        raise typer.Abort() from None  # main's, which Typer would turn into a silent 130; main says "interrupted"
    if metrics.get("interrupted"):  # the best epoch is kept, but a script must not take it for a finished run
        raise typer.Exit(errors.INTERRUPTED)


@app.command(short_help="Train the base detector on any seal.")
def pretrain(
    out: Path = typer.Option(DATA / "pretrain", help="Run folder: checkpoint.pth, state.json, base.pth, card.md."),
    backgrounds: List[Path] = typer.Option(None, metavar="PATH", help="Folders of real product photos (no stamps on them), "
                                           "repeatable; built-in scenes are always used too."),
    arch: str = typer.Option(P.arch, help="ResNet body: resnet18, resnet34 or resnet50."),
    size: int = typer.Option(P.size, min=64, max=1024, help="Input size in pixels (the shipped base: 128, then 256 on 160 px windows)."),
    crop: Optional[int] = typer.Option(None, min=0, help="Train on random windows of this many pixels of the "
                                       "--size image, as `train --crop` does (valid: the whole image; 0: none)."),
    init: Optional[Path] = typer.Option(None, help="Start from this base file (e.g. the shipped one, to go on "
                                        "at another size) instead of random weights; no clear-stamp warm-up."),
    epochs: Optional[int] = typer.Option(None, min=1, help=f"Epochs of the one-cycle schedule (default {P.epochs}). With "
                                         "--resume: a new length for the run's schedule."),
    epoch_images: int = typer.Option(P.epoch_images, min=8, help="New images composed per epoch."),
    valid_images: int = typer.Option(P.valid_images, min=8, help="Composed valid images (the same every epoch)."),
    bs: int = typer.Option(P.bs, min=1, help="Batch size."),
    lr: float = typer.Option(P.lr, min=1e-6, max=1.0, help="Peak learning rate."),
    seed: int = typer.Option(P.seed, help="Same seed, same images."),
    workers: Optional[int] = typer.Option(None, min=0, help="Composing processes (default: the cores but one; "
                                          "16 at most on a GPU)."),
    device: Optional[str] = typer.Option(None, help="cuda, cpu... (default: the GPU when there is one)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last finished epoch "
                                "(weights, optimiser and schedule position); its own settings are kept."),
    mixed_precision: bool = typer.Option(P.mixed_precision, help="bf16/fp16 autocast where the hardware runs it natively."),
    ship: bool = typer.Option(False, help="Only copy the finished run's base.pth and card into data/weights/, "
                              "where `train` takes its base from (a maintainer's step: each copy stays in git)."),
):
    """Train the class-agnostic base detector on images composed on the fly (thousands of generated seal
    designs with every compose look); `train` starts from it. Ctrl-C stops after the current batch;
    --resume continues."""
    from stampcheck.paths import refuse_overlap
    from stampcheck.train.pretrain import pretrain as run_pretrain
    from stampcheck.train.pretrain import ship as ship_base

    try:
        if ship:
            ship_base(out, log=report.print)
            return
        refuse_overlap(out, list(backgrounds or []))
        if init and not init.is_file():
            raise FileNotFoundError(f"--init {init}: {'not a file' if init.exists() else 'no such file'}")
        cfg = PretrainConfig(arch=arch, size=size, crop=crop or None, init=str(init) if init else None, epochs=epochs or P.epochs, epoch_images=epoch_images,
                             valid_images=valid_images, bs=bs, lr=lr, seed=seed,
                             backgrounds=[str(b) for b in backgrounds or []], workers=workers, device=device,
                             mixed_precision=mixed_precision)
        result = run_pretrain(out, cfg, resume=resume, epochs_changed=epochs if resume else None, log=report.print)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    except KeyboardInterrupt:  # as in train: said by main as "interrupted"
        raise typer.Abort() from None
    report.print(f"base: {out / 'base.pth'} (sha256 {result['sha256'][:16]}...), card: {out / 'card.md'}")
    if result.get("interrupted"):
        raise typer.Exit(errors.INTERRUPTED)
