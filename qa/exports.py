"""qa's verdicts in the formats other tools read, written beside results.jsonl:

- ``coco.json``: the photos and the stamps found as a COCO detection set (each annotation with its
  ``score``; ``file_name`` the photo's absolute path), which pycocotools and CVAT ("COCO 1.0"
  import, matching the photos by name) read;
- ``coco_detections.json``: the same stamps as COCO results (``[{image_id, category_id, bbox
  [x, y, w, h], score}]``, as Ultralytics' save_json, detectron2 and mmdetection write), ids of the first;
- ``label-studio.json``: one Label Studio task per photo read, the stamps found as its predictions
  (pre-annotations a reviewer accepts or corrects). Images are served by Label Studio's local files
  (``/data/local-files/?d=PATH``, PATH the photo's absolute path without its leading "/", percent-encoded): start it
  with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/.
  Its labelling config: ``<RectangleLabels name="label" toName="image">`` over ``<Image name="image"
  value="$image"/>``, one ``<Label>`` per class.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from stampcheck.atomic import atomic_write_json

COCO_JSON, COCO_DETECTIONS, LABEL_STUDIO_JSON = "coco.json", "coco_detections.json", "label-studio.json"
EXPORTS = (COCO_JSON, COCO_DETECTIONS, LABEL_STUDIO_JSON)


def coco_files(records: list[dict], classes: list[str]) -> tuple[dict, list[dict]]:
    """The photos read (``records``: results.jsonl's) and their stamps as a COCO set and as COCO results."""
    cat = {c: k + 1 for k, c in enumerate(classes)}
    images, annotations, results = [], [], []
    for r in records:
        if r["status"] != "ok":
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": str(Path(r["file"]).resolve()), "width": r["width"],
                       "height": r["height"]})
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            found = {"image_id": image_id, "category_id": cat[d["class"]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "score": d["score"]}
            annotations.append({"id": len(annotations) + 1, **found, "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                                "segmentation": []})
            results.append(found)
    dataset = {"info": {"description": "stamps found by stampcheck qa", "version": "1.0"}, "licenses": [],
               "images": images, "annotations": annotations,
               "categories": [{"id": k, "name": c, "supercategory": "stamp"} for c, k in cat.items()]}
    return dataset, results


def label_studio_tasks(records: list[dict], model: str) -> list[dict]:
    """One task per photo read, its stamps as a prediction in percent of the photo (Label Studio's
    rectangle), scored by the photo's score."""
    tasks = []
    for r in records:
        if r["status"] != "ok":
            continue
        w, h = r["width"], r["height"]
        result = [{"id": f"s{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                   "original_width": w, "original_height": h, "image_rotation": 0, "score": d["score"],
                   "value": {"x": 100 * d["box"][0] / w, "y": 100 * d["box"][1] / h,
                             "width": 100 * (d["box"][2] - d["box"][0]) / w,
                             "height": 100 * (d["box"][3] - d["box"][1]) / h,
                             "rotation": 0, "rectanglelabels": [d["class"]]}}
                  for k, d in enumerate(r["detections"])]
        path = str(Path(r["file"]).resolve()).lstrip("/")
        # the name's own bytes, percent-encoded (a name that is no UTF-8 too)
        tasks.append({"data": {"image": f"/data/local-files/?d={quote(os.fsencode(path))}"},
                      "predictions": [{"model_version": model, "score": r["score"], "result": result}]})
    return tasks


def write_exports(out: Path, records: list[dict], classes: list[str], model: str) -> None:
    dataset, results = coco_files(records, classes)
    atomic_write_json(out / COCO_JSON, dataset)
    atomic_write_json(out / COCO_DETECTIONS, results)
    atomic_write_json(out / LABEL_STUDIO_JSON, label_studio_tasks(records, model))
