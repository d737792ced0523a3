"""fastai DataLoaders from the dataset contract, keeping its train/valid split."""

from __future__ import annotations

from pathlib import Path

from fastai.data.block import DataBlock
from fastai.data.transforms import FuncSplitter
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import BBoxBlock, BBoxLblBlock, ImageBlock, clip_remove_empty
import torch
from fastai.data.transforms import Normalize

from stampcheck.dataset import IMAGES_DIR, DatasetError, ImageLabels, class_names, read_labels

MEAN, STD = imagenet_stats


class ImagePath:
    """item -> image path; a class rather than a lambda so an exported learner pickles."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __call__(self, item: ImageLabels):
        return self.root / IMAGES_DIR / item.file


# No return annotations on these getters: fastai casts results to an annotated return type.
def item_boxes(item: ImageLabels):
    return [list(b.as_tuple()) for b in item.boxes]


def item_classes(item: ImageLabels):
    return [b.label for b in item.boxes]


def is_valid(item: ImageLabels) -> bool:
    return item.split == "valid"


def pad_boxes(samples, pad_idx: int = 0):
    """fastai's bb_pad, but labels always long: an image without stamps has an empty *float*
    label tensor, which cannot be stacked with the long ones of stamped images."""
    samples = [(s[0], *clip_remove_empty(*s[1:])) for s in samples]
    max_len = max(len(s[2]) for s in samples)

    def pad(img, bbox, lbl):
        bbox = torch.cat([bbox, bbox.new_zeros(max_len - bbox.shape[0], 4)])
        lbl = lbl.long()
        return img, bbox, torch.cat([lbl, lbl.new_zeros(max_len - lbl.shape[0]) + pad_idx])
    return [pad(*s) for s in samples]


def augmentations(size: int):
    """Small rotation, zoom, lighting and warp, applied to images and boxes together on the batch.
    No flips (a real stamp never reads mirrored) and zero padding (reflection would mirror a stamp
    into the border without a label)."""
    return aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.15, max_lighting=0.3, max_warp=0.1,
                          p_affine=0.75, pad_mode="zeros", size=size)


def stamp_datablock(root: Path, classes: list[str], size: int, augment: bool = True) -> DataBlock:
    batch_tfms = (augmentations(size) if augment else []) + [Normalize.from_stats(MEAN, STD)]
    return DataBlock(
        blocks=(ImageBlock, BBoxBlock, BBoxLblBlock(vocab=classes)), n_inp=1,
        get_x=ImagePath(root), get_y=[item_boxes, item_classes], splitter=FuncSplitter(is_valid),
        # Squish, not crop: a stamp near the edge must stay in the picture.
        item_tfms=Resize(size, method="squish"), batch_tfms=batch_tfms)


def stamp_dataloaders(root: Path, size: int, bs: int, workers: int, device, augment: bool = True):
    items = read_labels(root)
    if not any(i.split == "valid" for i in items) or not any(i.split == "train" for i in items):
        raise DatasetError(f"{root}: needs images in both the train and the valid split")
    classes = class_names(items)
    db = stamp_datablock(root, classes, size, augment)
    return db.dataloaders(items, bs=bs, num_workers=workers, device=device, before_batch=pad_boxes,
                          pin_memory=device.type == "cuda", persistent_workers=workers > 0), classes
