"""Training images composed on the fly: a torch Dataset over the compositor.

Image ``i`` is a pure function of (seed, i): a background (a built-in scene or a crop of a real
photo), one to three generated seal designs (compose.seals) with all of compose's looks, or none,
and a JPEG round trip at a random quality. Nothing is written to disk, every index is a new image,
and any worker process gives the same image for the same index. Used by ``stampcheck pretrain``.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stampcheck.compose.backgrounds import builtin_background
from stampcheck.compose.looks import Looks, compose_image
from stampcheck.compose.seals import seal_design
from stampcheck.compose.stamps import Stamp
from stampcheck.images import ImageLimits, ImageRejected, find_images, fit_within, jpeg_bytes, open_checked
from stampcheck.train.data import MEAN, STD, check_crop, choose_window

# Pretraining looks: compose's defaults, but every mark is a stamp (class-agnostic: no unlabelled
# seal may appear as a "distractor"), and a third of the images carry none. What is not a stamp
# comes from the backgrounds: real products, logos, barcodes, print.
PRETRAIN_LOOKS = Looks(hard_negative_share=0.0, negative_share=0.35, multi_share=0.2, occlude_share=0.0)
# From scratch, the full range of looks (faint, small, see-through) gives too little signal to
# start learning; early images are mostly clearly inked, larger stamps (a curriculum).
CLEAR_LOOKS = Looks(scale=(0.2, 0.5), opacity=(0.9, 1.0), fade=(0.0, 0.15), blur=(0.0, 0.4), noise=(0.0, 3.0),
                    multiply_share=0.15, glare_share=0.05, truncate_share=0.05, occlude_share=0.0, hard_negative_share=0.0,
                    negative_share=0.3, multi_share=0.2, ink_colours=("keep", "#c0202a", "#1d3a9a", "#55287e"))
DESIGNS = 20_000  # design numbers drawn from (47 KB each once drawn, 0.9 GB for all)


@lru_cache(maxsize=None)
def design_stamp(n: int) -> Stamp:
    """Seal design ``n`` as a Stamp of the one class "stamp"."""
    return Stamp(name="stamp", rgba=np.asarray(seal_design(n)), sha256=f"design-{n}")


def draw_designs(count: int = DESIGNS) -> None:
    """Draw designs 0..count-1 in this process, before the loader workers start. Drawing one costs
    more than composing an image, and the workers are new every epoch (so that they see the epoch's
    offset): without this each would draw the designs again, every epoch. Forked, they share these."""
    for n in range(count):
        design_stamp(n)


class Designs(Sequence):
    """``count`` design numbers drawn by ``rng``, drawn as pictures only when compose uses one."""

    def __init__(self, rng: np.random.Generator, count: int = 3):
        self.numbers = [int(n) for n in rng.integers(DESIGNS, size=count)]

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, k: int) -> Stamp:
        return design_stamp(self.numbers[k])


def load_backgrounds(folders: list[Path], max_side: int, progress=None) -> list[Image.Image]:
    """Every usable photo below ``folders``, decoded once at about ``max_side`` (kept in memory:
    forked loader workers share it). Unusable files are skipped."""
    out = []
    files = find_images([Path(f) for f in folders])
    for f in files:
        try:
            out.append(fit_within(open_checked(f, ImageLimits(min_side=32), draft_size=max_side), max_side))
        except ImageRejected:
            continue
    return out


class SyntheticStamps(torch.utils.data.Dataset):
    """``length`` images per epoch, indices ``offset + i``; ``size`` x ``size`` normalised tensors
    and boxes in fastai's -1..1 coordinates (label 1: stamp).

    With ``crop``, a ``crop`` x ``crop`` window of the ``size`` image, chosen as `train --crop`
    chooses its windows (around a stamp, cutting none): the base then sees stamps as many pixels
    wide as the training that starts from it does."""

    def __init__(self, length: int, size: int, seed: int = 0, backgrounds: list[Image.Image] | None = None,
                 looks: Looks = PRETRAIN_LOOKS, offset: int = 0, real_share: float = 0.7, clear_until: int = 0,
                 crop: int | None = None):
        check_crop(crop, size)
        self.length, self.size, self.seed, self.offset, self.crop = length, size, seed, offset, crop
        self.clear_until = clear_until  # images before this index are clear looks with falling odds
        self.backgrounds = backgrounds or []
        self.looks, self.real_share = looks, real_share if self.backgrounds else 0.0
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.length

    def background(self, rng: np.random.Generator) -> Image.Image:
        """A real photo, randomly cropped and sometimes mirrored (it holds no stamp yet, so a
        mirror is just another product), or a built-in scene."""
        side = int(self.size * 1.25)
        if rng.random() >= self.real_share:
            return builtin_background(int(rng.integers(10_000_000)), side)
        img = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        w, h = img.size
        keep = rng.uniform(0.55, 1.0)
        cw, ch = max(16, int(w * keep)), max(16, int(h * keep * rng.uniform(0.8, 1.25)))
        cw, ch = min(cw, w), min(ch, h)
        x, y = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return fit_within(img, side)

    def compose(self, index: int) -> tuple[Image.Image, list, int]:
        """The composed photo (its own size, before the camera's JPEG), its pixel boxes, and the
        JPEG quality it is to be saved at."""
        rng = np.random.default_rng([self.seed, 11, self.offset + index])
        bg = self.background(rng)
        i = self.offset + index
        clear = self.clear_until and rng.random() < 1 - i / self.clear_until
        img, boxes, _ = compose_image(bg, Designs(rng), CLEAR_LOOKS if clear else self.looks, rng)
        return img, boxes, int(rng.integers(self.looks.jpeg_quality[0], self.looks.jpeg_quality[1] + 1))

    def __getitem__(self, index: int):
        img, boxes, quality = self.compose(index)
        w, h = img.size
        s = out = self.size
        px = [(bx.x0 * s / w, bx.y0 * s / h, bx.x1 * s / w, bx.y1 * s / h) for bx in boxes]  # squished, as train and qa do
        window = (0, 0, s, s)
        if self.crop:
            out = c = self.crop
            x0, y0 = choose_window(px, s, s, c, random.Random(f"{self.seed}:{self.offset + index}"))
            window = (x0, y0, x0 + c, y0 + c)
            # a stamp the window could not avoid cutting is clipped to it, as fastai clips a cut box
            px = [(max(a - x0, 0), max(b - y0, 0), min(cc - x0, c), min(d - y0, c)) for a, b, cc, d in px]
            px = [p for p in px if p[2] > p[0] and p[3] > p[1]]
        # Only the window's part of the photo goes through the JPEG round trip and the resize (a
        # 160 px window of a 256 px image is 39% of it): resizing a region with PIL's box= samples
        # the very points resizing the whole image and cropping it would.
        box = (window[0] * w / s, window[1] * h / s, window[2] * w / s, window[3] * h / s)
        reach = math.ceil(max(w, h) / s) + 1  # of the resize filter, in photo pixels
        part = (max(0, int(box[0]) - reach), max(0, int(box[1]) - reach),
                min(w, math.ceil(box[2]) + reach), min(h, math.ceil(box[3]) + reach))
        small = jpeg_round_trip(img if part == (0, 0, w, h) else img.crop(part), quality).resize(
            (out, out), Image.BILINEAR, box=(box[0] - part[0], box[1] - part[1], box[2] - part[0], box[3] - part[1]))
        x = torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1).float() / 255
        x = (x - self.mean) / self.std
        b = torch.tensor([[v / out * 2 - 1 for v in p] for p in px], dtype=torch.float32).view(-1, 4)
        return x, b, torch.ones(len(b), dtype=torch.long)


def jpeg_round_trip(img: Image.Image, quality: int) -> Image.Image:
    """The image as a camera's JPEG at ``quality`` gives it back."""
    return Image.open(io.BytesIO(jpeg_bytes(img, quality))).convert("RGB")


def collate(samples):
    """Images stacked; boxes and labels padded with label 0 (fastai's convention: no box)."""
    n = max(1, max(len(s[2]) for s in samples))
    boxes = torch.zeros(len(samples), n, 4)
    labels = torch.zeros(len(samples), n, dtype=torch.long)
    for k, (_, b, lab) in enumerate(samples):
        boxes[k, :len(b)], labels[k, :len(lab)] = b, lab
    return torch.stack([s[0] for s in samples]), boxes, labels


class Loader(torch.utils.data.DataLoader):
    """A torch DataLoader as fastai's DataLoaders and Learner expect one."""

    n_inp = 1  # fastai's Learner splits (image, boxes, labels) into input and targets by it
    device = None  # where fastai's Learner moves each batch

    def to(self, device):
        self.device = device
        return self
