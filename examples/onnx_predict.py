"""Check photos with an exported stampcheck model, with numpy, Pillow and onnxruntime alone.

    stampcheck export data/model                       # writes data/model/model.onnx
    python examples/onnx_predict.py data/model/model.onnx photo.jpg [more.jpg ...]

Prints one JSON line per photo: its score (the best cell's probability), whether it carries a stamp
at the model's threshold, and the stamps found (score, class, box in the photo's own pixels,
x0 y0 x1 y1, x1/y1 exclusive). They are the numbers `stampcheck qa --engine onnx` gives, because
the photo is read as qa reads it: a JPEG decoded at reduced scale (Pillow's draft mode, its short side
at least max(size, 160)); a 16-bit or float photo brought to 8 bits, transparency flattened on white
(both reduced as far as that size allows); turned upright by its EXIF orientation; squished to size x
size bilinearly with reducing_gap=2.0. A two-stage model's second look (its
NAME.verifier.onnx) is not applied here: the lines are the detector's; use qa for both stages.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

THUMB = 160     # qa decodes at least this many pixels on the short side (its report's thumbnails)
NMS_IOU = 0.5   # a box overlapping a better one of its class by more than this is dropped
MAX_FOUND = 10  # stamps reported per photo


def grey8(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey photo at 8 bits, as qa brings it: 16-bit spans 0..65535;
    any other 0..255 when no value is above 255, else 0..65535."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        return Image.fromarray(((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "L")
    top = 65535 if (img.getextrema()[1] or 0) > 255 else 255
    return Image.fromarray(np.nan_to_num(np.clip(a.astype(np.float64) / top * 255.0 + 0.5, 0, 255)).astype(np.uint8), "L")


def on_white(img: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA")).convert("RGB")


def read_photo(path: str, size: int) -> tuple[np.ndarray, int, int]:
    """The model's input (uint8, 3 x size x size) and the photo's upright width and height."""
    img = Image.open(path)
    w, h = img.size
    draft = max(size, THUMB)
    if img.format == "JPEG" and min(w, h) > draft:
        k = min(w, h) / draft
        img.draft("RGB", (int(w / k), int(h / k)))
    img.load()
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = grey8(img)  # then reduced as far as the draft size allows, as qa does, before turning
        if min(img.size) >= 2 * draft:
            img = img.reduce(min(img.size) // draft)
    elif alpha and min(img.size) >= 2 * draft:
        img = on_white(img).reduce(min(img.size) // draft)
    img = ImageOps.exif_transpose(img)
    img = on_white(img) if alpha and img.mode != "RGB" else img.convert("RGB")
    x = np.asarray(img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)).transpose(2, 0, 1)
    return x, (h if turned else w), (w if turned else h)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[int]:
    """Greedy non-maximum suppression per class, best first (as torchvision's batched_nms)."""
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    order, keep = np.argsort(-scores, kind="stable"), []
    with np.errstate(invalid="ignore", divide="ignore"):
        while order.size:
            i, rest = order[0], order[1:]
            keep.append(int(i))
            inter = (np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
                     * np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None))
            overlap = inter / (area[i] + area[rest] - inter)
            order = rest[~((overlap > NMS_IOU) & (classes[rest] == classes[i]))]
    return keep


def to_photo(box: np.ndarray, size: int, width: int, height: int) -> list[float]:
    """A box in input pixels -> the photo's pixels, clipped to it and at least 1 px wide and high."""
    x0, y0, x1, y1 = np.clip(np.nan_to_num(box.astype(np.float64) / size, nan=0.0), 0, 1).tolist()
    x0, y0 = min(x0 * width, width - 1), min(y0 * height, height - 1)
    return [x0, y0, max(x1 * width, x0 + 1), max(y1 * height, y0 + 1)]


def main(model: str, photos: list[str]) -> None:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    config = json.loads(session.get_modelmeta().custom_metadata_map["stampcheck"])["config"]
    size, classes, threshold = config["size"], config["classes"], config["threshold"]
    for path in photos:
        x, width, height = read_photo(path, size)
        scores, boxes = (a[0] for a in session.run(None, {"image": x[None]}))
        best, cls = scores.max(-1), scores.argmax(-1)
        kept = np.flatnonzero(best >= threshold)
        found = [[float(best[i]), classes[int(cls[i])], to_photo(boxes[i], size, width, height)]
                 for i in kept[nms(boxes[kept], best[kept], cls[kept])[:MAX_FOUND]]]
        print(json.dumps({"file": path, "score": float(best.max()), "stamped": bool(found), "found": found}))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
