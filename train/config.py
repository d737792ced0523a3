"""Every training setting and its default, stated once: `stampcheck train` and `stampcheck pretrain`
read their options' defaults from here (and --help shows them). No torch here, so the CLI reads
them without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field

LR = 3e-3  # the peak learning rate of the one-cycle schedule, training and pretraining alike


@dataclass
class TrainConfig:
    arch: str = "resnet18"         # the shipped base detector's
    size: int | None = None        # None: suited to the device (CPU_SIZE, GPU_SIZE)
    crop: int | None = None        # train on random crop x crop windows of the size x size image;
    # None with size None: CPU_CROP on a CPU; 0: never
    epochs: int = 10
    minutes: float | None = None   # train as well as possible in this time: sets the epochs
    bs: int = 32
    lr: float | None = None        # None: LR, or lr_find's suggestion with lr_find=True
    lr_find: bool = False
    pretrained: str | bool = "base"  # base, imagenet or none (see stampcheck.train.model.build_model)
    weights: str | None = None
    init: str | None = None        # an earlier stampcheck model folder to start from (fine-tuning)
    workers: int | None = None     # data-loader processes; None: picked for the device
    device: str | None = None      # None: cuda if available
    patience: int = 0              # early stopping after this many epochs without improvement
    seed: int = 0
    augment: bool = True
    mixed_precision: bool = True   # bf16/fp16 autocast where the hardware runs it natively
    # a second look at each candidate (train.verifier_training): asked for, as on the 15-minute CPU
    # recipe it adds nothing to the detector that the whole budget trains (BENCHMARKS.md)
    verifier: bool = False
    valid_images: int = 400        # of the valid split, a fixed sample (0: all): every valid pass costs


@dataclass
class PretrainConfig:
    arch: str = "resnet18"
    size: int = 128
    crop: int | None = None  # train on windows of the size image (valid: the whole image)
    init: str | None = None  # a base file to start from instead of random weights
    init_sha256: str | None = None  # of that file when the run began (the shipped base may be replaced)
    epochs: int = 50
    epoch_images: int = 2000
    valid_images: int = 300
    bs: int = 32
    lr: float = LR
    seed: int = 0
    backgrounds: list[str] = field(default_factory=list)
    workers: int | None = None
    device: str | None = None
    mixed_precision: bool = True
