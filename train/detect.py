"""The head's maths: which cells own which stamp, the loss, and turning outputs into detections.

Coordinates inside the model are fastai's: x and y in -1..1 across the (squished) input, boxes
``x0, y0, x1, y1``; :func:`to_pixels` maps them to the pixels of an image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from stampcheck.engine.graph import cell_centres, split_output

CENTRE_RADIUS = 1.5  # cells: a cell owns a stamp when its centre is inside it and this near its centre


def plain(t: torch.Tensor) -> torch.Tensor:
    """fastai's typed tensors (TensorBBox, TensorMultiCategory) as plain tensors, which index freely."""
    return t.as_subclass(torch.Tensor)


def assign(boxes: torch.Tensor, labels: torch.Tensor, h: int, w: int, n_classes: int):
    """Targets for every cell: class one-hot (B, HW, C), box (B, HW, 4), positive mask (B, HW).

    A cell owns a stamp when its centre lies inside the box and within CENTRE_RADIUS cells of the
    box centre; the cell holding the box centre always does, so even the smallest stamp is learnt.
    Where boxes compete for a cell, the smaller one wins. Label 0 is fastai's padding (no box).
    """
    bsz, n = labels.shape[:2]
    hw = h * w
    device = labels.device
    cls_t = torch.zeros(bsz, hw, n_classes, device=device)
    if n == 0:
        return cls_t, torch.zeros(bsz, hw, 4, device=device), torch.zeros(bsz, hw, dtype=torch.bool, device=device)
    boxes = boxes.float().clamp(-1, 1)
    x0, y0, x1, y1 = boxes.unbind(-1)
    valid = (labels > 0) & (x1 > x0) & (y1 > y0)
    gcx, gcy = (x0 + x1) / 2, (y0 + y1) / 2
    c = cell_centres(h, w, device)
    cx, cy = c[None, :, 0, None], c[None, :, 1, None]
    inside = (cx > x0[:, None]) & (cx < x1[:, None]) & (cy > y0[:, None]) & (cy < y1[:, None])
    near = ((cx - gcx[:, None]).abs() <= CENTRE_RADIUS * 2 / w) & ((cy - gcy[:, None]).abs() <= CENTRE_RADIUS * 2 / h)
    centre_cell = (((gcy + 1) / 2 * h).long().clamp(0, h - 1) * w + ((gcx + 1) / 2 * w).long().clamp(0, w - 1))
    owns = (inside & near) | F.one_hot(centre_cell, hw).bool().transpose(1, 2)
    owns &= valid[:, None, :]
    area = ((x1 - x0) * (y1 - y0))[:, None, :].expand(bsz, hw, n)
    area = torch.where(owns, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(-1)
    pos = torch.isfinite(best_area)
    box_t = boxes.gather(1, best[..., None].expand(bsz, hw, 4))
    cls_idx = (labels.long().gather(1, best) - 1).clamp(min=0)
    cls_t[pos] = F.one_hot(cls_idx[pos], n_classes).float()
    return cls_t, box_t, pos


class StampLoss(nn.Module):
    """Score loss on every cell + ``l1_weight`` * L1 + ``giou_weight`` * GIoU loss on the boxes of
    cells that own a stamp; each term is divided by the number of such cells.

    Scores: torchvision's sigmoid focal loss, which with the defaults (``gamma`` 0, ``alpha`` -1:
    no weighting) is plain binary cross-entropy. Focal loss proper (``gamma`` 2, ``alpha`` 0.25) is
    made for detectors with ~100k anchors per image; this grid has 36 to a few hundred
    cells, and there focal loss only slowed learning: the CPU demo recipe reached 0.893 held-out
    presence accuracy with it and 0.938 with BCE (600 held-out photos, same steps).
    Box weights (2.5 and 2) balance the terms for coordinates in -1..1 (L1 there is twice L1 in 0..1).
    """

    threshold = 0.5  # learn.predict's cut-off (see decodes); train sets the model's own before export

    def __init__(self, n_classes: int, l1_weight: float = 2.5, giou_weight: float = 2.0,
                 gamma: float = 0.0, alpha: float = -1.0):
        super().__init__()
        self.n_classes, self.l1_weight, self.giou_weight = n_classes, l1_weight, giou_weight
        self.gamma, self.alpha = gamma, alpha

    def forward(self, out: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out, boxes, labels = plain(out), plain(boxes), plain(labels)
        logits, pred = split_output(out, self.n_classes)
        cls_t, box_t, pos = assign(boxes, labels, out.shape[2], out.shape[3], self.n_classes)
        n_pos = pos.sum().clamp(min=1).float()
        loss = sigmoid_focal_loss(logits, cls_t, self.alpha, self.gamma, reduction="sum") / n_pos
        if pos.any():
            p, t = pred[pos], box_t[pos]
            loss = loss + self.l1_weight * F.l1_loss(p, t, reduction="sum") / n_pos / 4
            loss = loss + self.giou_weight * generalized_box_iou_loss(p, t, reduction="sum") / n_pos
        return loss

    def decodes(self, out: torch.Tensor):
        """fastai's decoding of raw outputs (``learn.predict``, ``get_preds(with_decoded=True)``):
        per image the boxes (-1..1) and labels (class + 1; 0 is fastai's padding, ``#na#``) of the
        stamps scoring at least ``threshold``, best first, padded as fastai's bb_pad pads. fastai's
        decode_batch then turns them into pixels of the model's input and class names."""
        from fastai.torch_core import TensorMultiCategory
        from fastai.vision.core import TensorBBox

        found = [f["dets"] for f in detect(plain(out), self.n_classes, self.threshold)]
        n = max((len(s) for s, _, _ in found), default=0)
        boxes, labels = out.new_zeros(len(found), n, 4).float(), torch.zeros(len(found), n, dtype=torch.long,
                                                                              device=out.device)
        for b, (s, c, bx) in enumerate(found):
            boxes[b, :len(s)], labels[b, :len(s)] = bx.clamp(-1, 1), c + 1
        return TensorBBox(boxes), TensorMultiCategory(labels)


def detect(out: torch.Tensor, n_classes: int, threshold: float, nms_iou: float = 0.5, max_det: int = 10):
    """Per image: ``score`` (the highest stamp score anywhere: presence), ``box``/``cls`` of that
    cell, and ``dets``: (scores, classes, boxes) at or above ``threshold`` after NMS."""
    logits, boxes = split_output(out, n_classes)
    probs = logits.sigmoid()
    score, cls = probs.max(-1)  # per cell
    top = score.argmax(-1)
    results = []
    for b in range(out.shape[0]):
        keep = score[b] >= threshold
        s, c, bx = score[b][keep], cls[b][keep], boxes[b][keep]
        k = batched_nms(bx, s, c, nms_iou)[:max_det]
        results.append({"score": float(score[b, top[b]]), "box": boxes[b, top[b]], "cls": int(cls[b, top[b]]),
                        "dets": (s[k], c[k], bx[k])})
    return results


def to_pixels(box: torch.Tensor, width: int, height: int) -> list[float]:
    """A -1..1 box -> pixels of a width x height image (x1/y1 exclusive), clipped to the image and at
    least 1 px wide and high: a head can predict boxes of zero size (exp of a very negative
    distance), and every consumer (drawing, IoU, crops) expects a real box."""
    x0, y0, x1, y1 = ((box.detach().float().cpu().nan_to_num(0.0).clamp(-1, 1) + 1) / 2).tolist()
    x0, y0 = min(x0 * width, width - 1), min(y0 * height, height - 1)
    return [x0, y0, max(x1 * width, x0 + 1), max(y1 * height, y0 + 1)]


def best_iou(box: torch.Tensor, truth: torch.Tensor) -> float:
    """IoU of one predicted box with the true box it overlaps most (0 when there is none)."""
    if truth.numel() == 0:
        return 0.0
    return float(box_iou(box[None].float(), truth.float()).max())
