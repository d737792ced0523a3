"""fastai DataLoaders from the dataset contract, keeping its train/valid split."""

from __future__ import annotations

import hashlib

import random
from pathlib import Path

import numpy as np
import torch
from fastai.data.block import DataBlock
from fastai.data.transforms import FuncSplitter, Normalize
from fastai.vision.augment import RandTransform, Resize, aug_transforms
from fastai.vision.core import PILImage, TensorBBox, TensorPoint, imagenet_stats
from fastai.vision.data import BBoxBlock, BBoxLblBlock, ImageBlock, clip_remove_empty
from fastcore.basics import fastuple
from PIL import Image, ImageOps

from stampcheck.dataset import IMAGES_DIR, DatasetError, ImageLabels, class_names, read_labels
from stampcheck.files import open_regular
from stampcheck.images import ImageRejected, open_checked, to_rgb8
from stampcheck.train.detect import plain, to_pixels
from stampcheck.engine.photos import PHOTO_LIMITS

MEAN, STD = imagenet_stats
NAMED = 20  # unreadable images named one per line; more are counted


class ImagePath:
    """item -> image path; a class rather than a lambda so an exported learner pickles."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __call__(self, item: ImageLabels):
        return self.root / IMAGES_DIR / item.file


class UprightImage(PILImage):
    """fastai's image, turned upright by its EXIF orientation as every other reader here turns it
    (labels.csv's boxes are in the upright pixels; fastai alone would read a phone photo sideways)."""

    # The annotation is what fastai's test_dl and learn.predict accept (Transform.input_types): a
    # path as a string or a Path, a PIL image or a numpy array, as a stock vision learner takes.
    @classmethod
    def create(cls, fn: Path | str | Image.Image | np.ndarray, **kwargs):
        # to_rgb8: 16-bit and float photos scaled, transparency on white, as qa reads them
        if isinstance(fn, (str, Path)):
            with open_regular(fn) as f, Image.open(f) as img:  # a named pipe swapped in must not block a loader
                fn = to_rgb8(ImageOps.exif_transpose(img))
        elif isinstance(fn, np.ndarray):
            fn = to_rgb8(Image.fromarray(fn))
        elif isinstance(fn, Image.Image):
            fn = to_rgb8(ImageOps.exif_transpose(fn))
        return super().create(fn, **kwargs)


def predict_at(dls, size: int) -> None:
    """Squish what ``dls`` load for prediction (learn.predict, test_dl) to ``size``: the size a
    finished model predicts at, which may be larger than the one it trained at."""
    for tfm in dls.valid.after_item.fs:
        if isinstance(tfm, Resize):
            tfm.size = fastuple(size, size)


# No return annotations on these getters: fastai casts results to an annotated return type.
def item_boxes(item: ImageLabels):
    return [list(b.as_tuple()) for b in item.boxes]


def item_classes(item: ImageLabels):
    return [b.label for b in item.boxes]


def is_valid(item: ImageLabels) -> bool:
    return item.split == "valid"


def pad_boxes(samples, pad_idx: int = 0):
    """fastai's bb_pad, but labels always long: an image without stamps has an empty *float*
    label tensor, which cannot be stacked with the long ones of stamped images. Samples without
    targets (``dls.test_dl``, ``learn.predict``) pass as they are."""
    if any(len(s) < 3 for s in samples):
        return samples
    samples = [(s[0], *clip_remove_empty(*s[1:])) for s in samples]
    max_len = max(len(s[2]) for s in samples)

    def pad(img, bbox, lbl):
        bbox = torch.cat([bbox, bbox.new_zeros(max_len - bbox.shape[0], 4)])
        lbl = lbl.long()
        return img, bbox, torch.cat([lbl, lbl.new_zeros(max_len - lbl.shape[0]) + pad_idx])
    return [pad(*s) for s in samples]


def augmentations():
    """Small rotation, zoom, lighting and warp, applied to images and boxes together on the batch.
    No flips (a real stamp never reads mirrored) and zero padding (reflection would mirror a stamp
    into the border without a label). No output size: batches keep the size they come in."""
    return aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.15, max_lighting=0.3, max_warp=0.1,
                          p_affine=0.75, pad_mode="zeros")


class StampCrop(RandTransform):
    """Training only: a random ``crop`` x ``crop`` window of the squished image.

    The model then trains at the cost of ``crop`` pixels and predicts on the whole image at its
    full size, where a stamp is as many pixels wide as in training: small stamps get the pixels
    they need without paying for the whole image on every step. A window holds a stamp whole or
    not at all (a sliver of ink labelled "stamp" would teach noise). In a stamped image the window
    is placed around one of its stamps, so crops keep the dataset's share of stamped images."""

    split_idx, order = 0, 2  # after Resize (order 1)

    def __init__(self, crop: int):
        super().__init__()
        self.crop = crop

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        if split_idx != self.split_idx:  # fastai calls it on valid and test items too (no boxes there)
            return
        img, boxes = b[0], b[1]
        w, h = img.size
        c = self.crop
        px = [to_pixels(box, w, h) for box in plain(boxes).view(-1, 4)]
        self.orig_sz = (w, h)
        self.tl = choose_window(px, w, h, c, random)

    def encodes(self, x: Image.Image | TensorBBox | TensorPoint):
        return x.crop_pad(self.crop, self.tl, orig_sz=self.orig_sz)


def choose_window(px: list, w: int, h: int, crop: int, rnd, tries: int = 10) -> tuple[int, int]:
    """Top-left corner of a ``crop`` window of a ``w`` x ``h`` image with pixel boxes ``px``: around
    one of the boxes when there are any, cutting none of them if ``tries`` random corners can.
    ``rnd``: the ``random`` module or a ``random.Random``."""
    ranges = [(0, w - crop), (0, h - crop)]
    if px:  # windows holding a chosen stamp whole; the stamp's own window when it is larger
        x0, y0, x1, y1 = rnd.choice(px)
        ranges = [_window_range(x0, x1, crop, w), _window_range(y0, y1, crop, h)]
    for _ in range(tries):
        tl = (rnd.randint(*ranges[0]), rnd.randint(*ranges[1]))
        if not any(_cut(box, tl, crop) for box in px):
            break
    return tl


def _window_range(lo: float, hi: float, crop: int, size: int) -> tuple[int, int]:
    """Left (or top) edges of the windows that hold lo..hi whole, within 0..size."""
    first, last = max(0, int(hi + 0.999) - crop), min(int(lo), size - crop)
    if first > last:  # larger than the window: centre it there
        first = last = min(max(0, int((lo + hi - crop) / 2)), size - crop)
    return first, last


def _cut(box, tl, crop: int) -> bool:
    """A box partly inside the window."""
    x0, y0, x1, y1 = box[0] - tl[0], box[1] - tl[1], box[2] - tl[0], box[3] - tl[1]
    inside = x0 >= 0 and y0 >= 0 and x1 <= crop and y1 <= crop
    outside = x1 <= 0 or y1 <= 0 or x0 >= crop or y0 >= crop
    return not (inside or outside)


def check_crop(crop: int | None, size: int) -> None:
    if crop and crop >= size:
        raise ValueError(f"--crop {crop} must be smaller than --size {size}")


def stamp_datablock(root: Path, classes: list[str], size: int, augment: bool = True,
                    crop: int | None = None) -> DataBlock:
    batch_tfms = (augmentations() if augment else []) + [Normalize.from_stats(MEAN, STD)]
    check_crop(crop, size)
    # Squish, not a centre crop: a stamp near the edge must stay in view (StampCrop never cuts one).
    item_tfms = [Resize(size, method="squish")] + ([StampCrop(crop)] if crop else [])
    return DataBlock(
        blocks=(ImageBlock(UprightImage), BBoxBlock, BBoxLblBlock(vocab=classes)), n_inp=1,
        get_x=ImagePath(root), get_y=[item_boxes, item_classes], splitter=FuncSplitter(is_valid),
        item_tfms=item_tfms, batch_tfms=batch_tfms)


def valid_sample(items: list[ImageLabels], n: int) -> list[ImageLabels]:
    """The train items and at most ``n`` (0: all) of the valid ones: the same sample every run on the
    same dataset (chosen by a hash of the file name), as each valid pass costs a pass over all of it,
    every epoch and several times after training."""
    valid = [i for i in items if i.split == "valid"]
    if not n or len(valid) <= n:
        return items
    kept = {i.file for i in sorted(valid, key=lambda i: hashlib.sha256(i.file.encode()).digest())[:n]}
    return [i for i in items if i.split != "valid" or i.file in kept]


def readable_items(root: Path, items: list[ImageLabels], log=print) -> list[ImageLabels]:
    """The items whose image decodes, so that one broken file costs one image, not the run (fastai
    would fail on it mid-epoch). Each one left out is logged. A JPEG is decoded at 1/8 scale: that
    still reads every byte, so truncation shows, at about 0.4 ms for a 512 px image."""
    good, bad = [], []
    for item in items:
        try:
            open_checked(Path(root) / IMAGES_DIR / item.file, PHOTO_LIMITS, draft_size=32)
            good.append(item)
        except ImageRejected as e:
            bad.append(f"{IMAGES_DIR}/{item.file}: {e}")
    for line in bad[:NAMED]:
        log(f"skipped unreadable image {line}")
    if len(bad) > NAMED:
        log(f"... and {len(bad) - NAMED} more unreadable images skipped")
    return good


def stamp_dataloaders(root: Path, size: int, bs: int, workers: int, device, augment: bool = True,
                      crop: int | None = None, log=print, valid_images: int = 0):
    """fastai DataLoaders of the dataset in ``root`` and its classes; ``valid_images`` > 0 keeps at
    most that many of the valid split (:func:`valid_sample`)."""
    items = readable_items(root, read_labels(root), log)
    if not any(i.split == "valid" for i in items) or not any(i.split == "train" for i in items):
        raise DatasetError(f"{root}: needs readable images in both the train and the valid split "
                           "(labels.csv's split column)")
    sampled = valid_sample(items, valid_images)
    if len(sampled) < len(items):
        log(f"valid: a fixed sample of {valid_images} of the {len(items) - len(sampled) + valid_images} valid images "
            "(--valid-images; 0 takes all)")
    items = sampled
    classes = class_names(items)
    db = stamp_datablock(root, classes, size, augment, crop)
    return db.dataloaders(items, bs=bs, num_workers=workers, device=device, before_batch=pad_boxes,
                          pin_memory=device.type == "cuda", persistent_workers=workers > 0), classes
