"""Training the verifier (stampcheck.engine.verifier): a second, small fastai learner that looks closely at each candidate the detector
proposes and says which stamp it is, or that it is none of ours.

At 256-320 px a stamp of a sixth of the photo is about 45 px wide: the detector learns "a round mark
is here", and bottle caps and round logos score as high as the stamp. On a crop of the photo itself
(stampcheck.engine.second_look) the same stamp is a hundred pixels wide and shows its lettering.

It is trained on what fools the detector, cut as the detector's candidates are cut at check time:
- positives: the detector's candidates that overlap a true stamp, and the true boxes jittered
  (shifted, scaled: the candidates' own errors), so truncated and partly covered stamps are there;
- negatives: the detector's best candidates on stamp-free images only (real products, caps, logos,
  barcodes, the dataset's distractor seals), and random windows of them.
Positives and negatives are cut from the same composed images by the same code, so no paste
artefact can be the cue. Its body starts as the trained detector's (a ResNet that already knows
this stamp from afar); the head is new.
"""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import numpy as np
import torch
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.torch_core import TensorCategory
from fastai.vision.augment import aug_transforms
from fastai.vision.core import TensorImage
from fastai.vision.data import IntToFloatTensor
from PIL import Image
from torchvision.ops import box_iou

from stampcheck.atomic import atomic_write_bytes
from stampcheck.dataset import IMAGES_DIR
from stampcheck.images import open_checked
from stampcheck.engine.config import DETAILS
from stampcheck.engine.second_look import LookConfig, crop, detail_view
from stampcheck.train.budget import TimeBudget, batch_seconds
from stampcheck.train.data import MEAN, STD
from stampcheck.engine.scores import ImageResult, best_threshold, summarise
from stampcheck.engine.photos import PHOTO_LIMITS
from stampcheck.engine.run import predict_photos
from stampcheck.engine.torch_engine import Predictor
from stampcheck.engine.verifier import VerifierGraph, WEIGHTS_NAME, from_detector

EPOCHS = 10          # without --minutes
LR = 2e-3
BS = 64
MINE_TRAIN = 600     # training images the detector proposes on
MINE_VALID = 600     # valid images the two stages are judged on (the detector's pass over each costs)
MINE_THRESHOLD = 0.01  # the lowest detector score mined: every candidate the detector might propose
POSITIVE_IOU = 0.4   # a candidate overlapping a true stamp this much is that stamp
JITTERS = 2          # jittered copies of every true box
RECALL = 0.98        # of valid stamps the candidate threshold keeps among the top_k
# The verifier's score is a softmax probability, and 0.5 its own decision point. Of the thresholds
# the valid split cannot tell from the best, the nearest to it: the strictest (the detector's rule)
# chose 0.78 on a round-seal model whose field accuracy was 0.91 there and 0.98 at 0.5, with no
# stamp-free or round-thing photo flagged at either (BENCHMARKS.md). Synthetic valid sets are full
# of faint stamps and look-alike seals; real doors are not.
PREFERRED_THRESHOLD = 0.5


# ---- mining ----

def _jitter(box, rng: random.Random):
    """A true box shifted and scaled a little, as the detector's candidates miss it."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    s = math.exp(rng.uniform(-0.2, 0.2))
    cx, cy = (x0 + x1) / 2 + rng.uniform(-0.12, 0.12) * bw, (y0 + y1) / 2 + rng.uniform(-0.12, 0.12) * bh
    return [cx - bw * s / 2, cy - bh * s / 2, cx + bw * s / 2, cy + bh * s / 2]


def _random_box(rng: random.Random, w: int, h: int):
    """A square window of a stamp-free image, 6-60% of its short side."""
    side = min(w, h) * math.exp(rng.uniform(math.log(0.06), math.log(0.6)))
    x0, y0 = rng.uniform(0, max(0, w - side)), rng.uniform(0, max(0, h - side))
    return [x0, y0, x0 + side, y0 + side]


def mine(detector: Predictor, root: Path, items: list, look: LookConfig, classes: list[str], seed: int,
         training: bool, bs: int = 32):
    """Crops and labels for the verifier from the labelled ``items`` (their images under ``root``).

    Returns ``(crops uint8 (N, 3, s, s), labels (N,), photos)``; ``photos`` lists per image its
    truth, and its candidates (detector score, box, index of its crop) best first, for judging the
    two stages on valid. ``training``: add jittered true boxes and random stamp-free windows, and
    take negatives from stamp-free images only; otherwise every candidate is cut and labelled."""
    rng = random.Random(seed)
    files = [Path(root) / IMAGES_DIR / i.file for i in items]
    crops, labels, photos = [], [], []
    index = {c: k for k, c in enumerate(classes)}
    for item, r in zip(items, predict_photos(detector, files, bs=bs, low_threshold=MINE_THRESHOLD)):
        if r.error:
            continue
        view = detail_view(open_checked(r.path, PHOTO_LIMITS), look.detail)
        size = (r.width, r.height)
        truth = torch.tensor([b.as_tuple() for b in item.boxes], dtype=torch.float32).view(-1, 4)
        truth_cls = [index.get(b.label, 0) + 1 for b in item.boxes]
        cands = (r.detections or [])[: look.top_k + (1 if training else 0)]
        entry = {"has_stamp": item.has_stamp, "truth": truth, "candidates": []}
        for score, _, box in cands:
            iou = box_iou(torch.tensor([box]), truth)[0] if len(truth) else torch.zeros(0)
            best = int(iou.argmax()) if len(iou) else -1
            overlap = float(iou[best]) if len(iou) else 0.0
            if overlap >= POSITIVE_IOU:
                label = truth_cls[best]
            elif not training or not item.has_stamp:
                label = 0
            else:
                continue  # a stamped image's other region or a partial overlap: negatives come from stamp-free images
            entry["candidates"].append((score, box, len(crops)))
            crops.append(crop(view, box, size, look))
            labels.append(label)
        if training:
            for box, c in zip(truth.tolist(), truth_cls):
                for _ in range(JITTERS):
                    crops.append(crop(view, _jitter(box, rng), size, look))
                    labels.append(c)
            if not item.has_stamp:
                crops.append(crop(view, _random_box(rng, *size), size, look))
                labels.append(0)
        photos.append(entry)
    empty = np.zeros((0, 3, look.size, look.size), np.uint8)
    return (np.stack(crops) if crops else empty), np.array(labels, dtype=np.int64), photos


# ---- training ----

class Crops(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return TensorImage(torch.from_numpy(self.x[i])), TensorCategory(int(self.y[i]))


def crop_dataloaders(train, valid, bs: int, device, augment: bool = True) -> DataLoaders:
    """fastai DataLoaders of in-memory crops, augmented on the batch (no flips: a stamp never reads
    mirrored)."""
    aug = aug_transforms(do_flip=False, max_rotate=12.0, max_zoom=1.1, max_lighting=0.35, max_warp=0.1,
                         pad_mode="zeros") if augment else []
    norm = Normalize.from_stats(MEAN, STD)
    # the crops are in memory: loader processes would only copy them
    dl = TfmdDL(Crops(*train), bs=bs, shuffle=True, drop_last=len(train[1]) > bs, device=device, num_workers=0,
                after_batch=[IntToFloatTensor(), *aug, norm])
    vdl = TfmdDL(Crops(*valid), bs=2 * bs, shuffle=False, device=device, num_workers=0,
                 after_batch=[IntToFloatTensor(), norm])
    return DataLoaders(dl, vdl, device=device)


@torch.no_grad()
def judge(graph: VerifierGraph, crops: np.ndarray, device, bs: int = 256) -> np.ndarray:
    graph.to(device)
    out = [graph(torch.from_numpy(crops[k:k + bs]).to(device)).float().cpu().numpy()
           for k in range(0, len(crops), bs)]
    return np.concatenate(out) if out else np.zeros((0, 1))


def candidate_threshold(photos: list[dict], top_k: int, detector_threshold: float) -> float:
    """The highest detector score that still keeps RECALL of the valid stamps among each photo's
    ``top_k`` candidates (a candidate is the stamp at IoU >= 0.5), at most the detector's own threshold."""
    found = []
    for p in photos:
        if not p["has_stamp"]:
            continue
        hits = [s for s, box, _ in p["candidates"][:top_k]
                if len(p["truth"]) and float(box_iou(torch.tensor([box]), p["truth"]).max()) >= 0.5]
        found.append(max(hits) if hits else -1.0)
    scores = np.array([s for s in found if s >= 0])
    if not len(scores):
        return MINE_THRESHOLD
    # the share RECALL of all stamps, of those the candidates can find at all
    q = max(0.0, 1 - RECALL * len(found) / len(scores))
    return float(np.clip(np.quantile(scores, q) - 1e-6, MINE_THRESHOLD, detector_threshold))


def two_stage_results(photos: list[dict], probs: np.ndarray, look: LookConfig) -> list[ImageResult]:
    """Each valid photo judged as qa judges it: its top_k candidates at or above the candidate
    threshold, the best verifier score among them, and that candidate's box."""
    results = []
    for p in photos:
        best, best_box = 0.0, None
        cands = [c for c in p["candidates"] if c[0] >= look.candidate_threshold][:look.top_k]
        for _, box, k in cands:
            s = float(probs[k, 1:].max())
            if s > best or best_box is None:
                best, best_box = s, box
        if best_box is None and p["candidates"]:
            best_box = p["candidates"][0][1]
        iou = (float(box_iou(torch.tensor([best_box]), p["truth"]).max())
               if best_box is not None and len(p["truth"]) else 0.0)
        results.append(ImageResult(p["has_stamp"], best, iou))
    return results


def train_verifier(model_dir: Path, dataset: Path, train_items: list, valid_items: list, classes: list[str],
                   device, seconds: float | None, mixed_precision: bool = True, seed: int = 0,
                   log=print) -> dict | None:
    """Mine crops with the finished detector in ``model_dir``, train the verifier (for ``seconds``,
    or EPOCHS), choose its candidate threshold and its threshold on valid, and write verifier.pth.
    Returns its figures (``valid``: the two stages together, as qa judges photos), or None when
    ``seconds`` leave no time to train it."""
    from stampcheck.train.precision import set_precision

    t0 = time.time()
    detector = Predictor(model_dir, device, mixed_precision, verifier=False)
    look = LookConfig(detail=_detail_size(dataset, train_items))
    rng = random.Random(seed)
    mined_train = rng.sample(train_items, min(MINE_TRAIN, len(train_items)))
    train_set = mine(detector, dataset, mined_train, look, classes, seed, training=True)
    judged = rng.sample(valid_items, min(MINE_VALID, len(valid_items)))
    valid_x, valid_y, photos = mine(detector, dataset, judged, look, classes, seed, training=False)
    look = replace(look, candidate_threshold=candidate_threshold(photos, look.top_k, detector.threshold))
    n_pos = int((train_set[1] > 0).sum())
    log(f"verifier: {len(train_set[1])} training crops ({n_pos} of a stamp) from {len(mined_train)} images, "
        f"{len(valid_y)} valid crops, {time.time() - t0:.0f} s; candidates from detector score "
        f"{look.candidate_threshold:.3f}, the best {look.top_k} per photo")
    model = from_detector(detector.model, len(classes)).to(device)
    dls = crop_dataloaders(train_set[:2], (valid_x, valid_y), BS, device)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=Adam, metrics=accuracy,
                    path=Path(model_dir), model_dir=".")
    set_precision(learn, device, mixed_precision)
    epochs, cbs = EPOCHS, []
    if seconds is not None:
        left = seconds - (time.time() - t0)
        epoch_s = (batch_seconds(learn)[0] or 0.1) * len(learn.dls.train)  # 0: too few batches to time
        judge_s = epoch_s * len(dls.valid) / max(1, len(dls.train)) + 5
        if left < judge_s + epoch_s / 4:
            log(f"verifier: {max(0.0, left):.0f} s of --minutes left, less than a quarter of its epoch "
                f"({epoch_s:.0f} s); the model stays one-stage (give more minutes for the second look)")
            return None
        epochs = max(1, int((left - judge_s) // epoch_s))
        cbs.append(TimeBudget(left - judge_s))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(4 * epochs + 1 if cbs else epochs, LR, cbs=cbs)
    graph = VerifierGraph(learn.model, detector.config).eval()
    probs = judge(graph, valid_x, device)
    look = replace(look, threshold=best_threshold(two_stage_results(photos, probs, look), PREFERRED_THRESHOLD))
    results = two_stage_results(photos, probs, look)
    metrics = {**summarise(results, look.threshold), "threshold": look.threshold, "images": len(results)}
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in learn.model.state_dict().items()}, buf)
    atomic_write_bytes(Path(model_dir) / WEIGHTS_NAME, buf.getvalue())
    log(f"verifier: {len(learn.recorder.values)} epochs, valid crop accuracy "
        f"{float(learn.recorder.values[-1][2]):.3f}; two stages on valid: accuracy {metrics['accuracy']:.3f}, "
        f"mean IoU {metrics['mean_iou']:.3f}, threshold {look.threshold:.2f} ({time.time() - t0:.0f} s)")
    return {"look": asdict(look), "valid": metrics, "seconds": round(time.time() - t0, 1),
            "epochs": len(learn.recorder.values), "train_crops": int(len(train_set[1])),
            "positive_crops": n_pos}


def _detail_size(root: Path, items: list, n: int = 64) -> int:
    """The long side of the training images (their median, from the headers of a few): the size
    photos are brought to before crops are cut, so that a crop shows a stamp as sharp as training did."""
    sides = []
    for item in items[:n]:
        try:
            with Image.open(Path(root) / IMAGES_DIR / item.file) as img:
                sides.append(max(img.size))
        except Exception:
            continue
    if not sides:
        return LookConfig.detail
    return int(np.clip(np.median(sides), *DETAILS))  # a size config.json's check would refuse makes no model
