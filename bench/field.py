"""The field set: real shop photos no model trains on, scored as qa checks photos.

For one test stamp (bench/stamps/NAME.png, or a PNG path): the 200 kept-out photos of bench.photos,
a fixed seeded half of them carrying one impression of the stamp drawn by bench.impression (its own
renderer, not compose's looks), the other half stamp-free; plus the round things of
bench/round-things.txt, real stamp-free photos of caps seen from above, round logos and seals, on
neither side of bench.photos' split. Every photo goes through the same camera blur, noise and JPEG,
stamped or not, at its own size (at most 1600 px long). Same seed, same bytes.

    python -m bench.field --stamp round-seal [--model MODEL_DIR] [--engine torch|onnx] [--seed 0]
                          [--out data/bench/field] [--json PATH]

The set goes to OUT/STAMP (OUT/STAMP-sSEED for another seed) once, then is reused:
images/kept-out/NNN.jpg and images/round-things/NNN.jpg, labels.csv in the dataset contract (the
`background` column names the source photo; `stampcheck evaluate MODEL OUT/STAMP` reads it as it
is) and field.json (how it was made, each photo's group and look). OUT/preview-STAMP.png shows
stamped photos with their boxes. With --model, the model runs through qa's engine
(stampcheck.engine.load_engine, then stampcheck.engine.run.predict_photos, at the model's own threshold):
accuracy, precision, recall, mean IoU (stampcheck.train.metrics: the top box over stamped photos, 0 where
missed), recall by stamp size (its box's long side over the photo's short side), flags on the round
things, the share of the kept-out stamp-free photos flagged, photos per second; a markdown row on
stdout and a JSON (default OUT/STAMP/score-MODEL-ENGINE.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from bench.impression import SIZE_BANDS, design_ink, finish, visible_stamp
from bench.photos import PHOTOS, round_things, split_photos
from stampcheck import errors
from stampcheck.atomic import _alive, atomic_path, atomic_write_json
from stampcheck.dataset import IMAGES_DIR, LABELS_CSV, Box, ImageLabels, labels_csv_text, read_labels
from stampcheck.images import fit_within

STAMPS = Path(__file__).resolve().parent / "stamps"
FIELD_JSON = "field.json"
RECIPE = 2  # raise when the renderer changes: a set built by another recipe is not reused
MAX_SIDE = 1600
SIZE_EDGES = (0.0, 0.2, 0.3, float("inf"))


class FieldError(ValueError):
    """Bad input for the field set (a stamp, the photos, an --out holding something else)."""


def stamp_path(stamp: str) -> Path:
    """A test stamp's name (bench/stamps/NAME.png) or a PNG's path."""
    path = Path(stamp) if stamp.lower().endswith(".png") else STAMPS / f"{stamp}.png"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STAMPS.glob("*.png")))
        raise FieldError(f"stamp {stamp!r}: no such file {path} (test stamps: {known}; or a .png path)")
    try:
        with Image.open(path) as img:
            design_ink(img)
    except Exception as e:  # whatever a broken file raises: the set cannot be drawn from it
        raise FieldError(f"stamp {path}: cannot be used ({type(e).__name__}: {e})") from e
    return path


def plan(seed: int, root: Path = PHOTOS) -> list[dict]:
    """Every field photo: its file in the set, source (relative to ``root``), group, and the size
    band of its stamp (bench.impression.SIZE_BANDS; None: no stamp): a seeded half of the kept-out
    photos get one, as many in each band."""
    _, kept = split_photos(root)
    rounds = round_things(root)
    if not kept or not rounds or not all(p.is_file() for p in rounds):
        raise FieldError(f"{root}: the shared product photos (and the round things of bench/round-things.txt) "
                         "are not all there")
    order = np.random.default_rng(seed).permutation(len(kept))[:len(kept) // 2].tolist()
    band = {i: k % len(SIZE_BANDS) for k, i in enumerate(order)}
    return ([{"file": f"kept-out/{i:03d}.jpg", "source": p.relative_to(root).as_posix(), "group": "kept-out",
              "band": band.get(i)} for i, p in enumerate(kept)]
            + [{"file": f"round-things/{i:03d}.jpg", "source": p.relative_to(root).as_posix(),
                "group": "round-things", "band": None} for i, p in enumerate(rounds)])


def render(entry: dict, k: int, stamp: Image.Image, seed: int, root: Path) -> tuple[bytes, tuple | None, dict | None]:
    """One field photo's JPEG, the stamp's box (None without) and its look. Seeded per photo, the
    look and the camera apart, so a stamp-free photo is the same bytes whichever stamp the set has."""
    with Image.open(root / entry["source"]) as img:
        photo = fit_within(ImageOps.exif_transpose(img).convert("RGB"), MAX_SIDE)
    box = look = None
    if entry["band"] is not None:
        photo, box, look, contrast = visible_stamp(photo, stamp, np.random.default_rng([seed, k, 0]),
                                                   SIZE_BANDS[entry["band"]])
        look = {**asdict(look), "size": round(max(box[2] - box[0], box[3] - box[1]) / min(photo.size), 4),
                "contrast": round(contrast, 1)}
    return finish(photo, np.random.default_rng([seed, k, 1])), box, look


def recipe(stamp: Path, seed: int, entries: list[dict]) -> dict:
    return {"recipe": RECIPE, "stamp": stamp.stem, "stamp_sha256": hashlib.sha256(stamp.read_bytes()).hexdigest(),
            "seed": seed, "sources": [e["source"] for e in entries], "max_side": MAX_SIDE}


def field_dir(out: Path, stamp: Path, seed: int) -> Path:
    return out / (stamp.stem if seed == 0 else f"{stamp.stem}-s{seed}")


def build_field(stamp: Path, out: Path, seed: int = 0, root: Path = PHOTOS, log=print) -> Path:
    """The field set of ``stamp`` under ``out`` (see the module docstring); an existing one made
    the same way is reused. Written beside under a temporary name, then renamed: a killed run
    leaves no half set where the set belongs."""
    if out.resolve().is_relative_to(root.resolve()):
        raise FieldError(f"--out {out} lies among the shared photos {root}: give a folder outside them")
    if out.exists() and not out.is_dir():
        raise FieldError(f"--out {out} is not a folder")
    entries = plan(seed, root)
    want = recipe(stamp, seed, entries)
    folder = field_dir(out, stamp, seed)
    remove_stale_parts(out, folder.name)
    if (folder / FIELD_JSON).is_file():
        try:
            have = json.loads((folder / FIELD_JSON).read_text(encoding="utf-8")).get("made")
        except (OSError, ValueError, AttributeError):
            have = None
        if have == want:
            return folder
        raise FieldError(f"{folder} holds a field set made another way (other photos, stamp, seed or renderer): "
                         "give another --out, or move it away")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FieldError(f"{folder} exists and is not a field set: give another --out")
    tmp = out / f".{folder.name}.{os.getpid()}.part"
    try:
        write_field(tmp, stamp, seed, entries, want, root, log)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def write_field(folder: Path, stamp: Path, seed: int, entries: list[dict], made: dict, root: Path, log) -> None:
    design = Image.open(stamp)
    design.load()
    items = []
    log(f"rendering the {stamp.stem} field set ({len(entries)} photos) into {folder.parent}")
    for k, entry in enumerate(entries):
        data, box, look = render(entry, k, design, seed, root)
        path = folder / IMAGES_DIR / entry["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry["look"] = look
        boxes = [Box(*box, label=stamp.stem)] if box else []
        items.append(ImageLabels(entry["file"], "", entry["source"], boxes))
    (folder / LABELS_CSV).write_text(labels_csv_text(items), encoding="utf-8")
    atomic_write_json(folder / FIELD_JSON, {"made": made, "photos": entries})


def remove_stale_parts(out: Path, name: str) -> None:
    """The temporary folders of build_field runs that were killed (only this set's, only of ended processes)."""
    for p in out.glob(f".{name}.*.part"):
        pid = p.name[len(name) + 2:-len(".part")]
        if pid.isdigit() and p.is_dir() and not p.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(p)


def preview(folder: Path, path: Path, count: int = 18, cols: int = 6, side: int = 240) -> Path:
    """A contact sheet of the set's first ``count`` stamped photos, their boxes drawn, sizes written."""
    photos = [e for e in json.loads((folder / FIELD_JSON).read_text(encoding="utf-8"))["photos"] if e["look"]]
    boxes = {i.file: i.boxes[0] for i in read_labels(folder) if i.boxes}
    shown = photos[:count]
    sheet = Image.new("RGB", (cols * side, -(-len(shown) // cols) * side), "white")
    draw = ImageDraw.Draw(sheet)
    for k, e in enumerate(shown):
        with Image.open(folder / IMAGES_DIR / e["file"]) as img:
            scale = (side - 4) / max(img.size)
            thumb = img.convert("RGB").resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        b = boxes[e["file"]]
        ImageDraw.Draw(thumb).rectangle([b.x0 * scale, b.y0 * scale, b.x1 * scale - 1, b.y1 * scale - 1],
                                        outline=(0, 255, 0))
        x, y = (k % cols) * side + 2, (k // cols) * side + 2
        sheet.paste(thumb, (x, y))
        look = e["look"]
        draw.text((x + 2, y + 2), f"{look['size']:.2f} {'own' if look['ink'] is None else 'ink'} "
                  f"{'multiply' if look['multiply'] else 'normal'} {look['opacity']:.2f}",
                  fill="yellow", stroke_width=2, stroke_fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


# ---- scoring ----

def score_field(model: Path, folder: Path, engine: str = "torch", device: str | None = None, bs: int = 32,
                one_stage: bool = False) -> dict:
    """The model's figures on a field set (see the module docstring); ``one_stage``: the torch
    engine without the model's verifier (the detector alone, from the same training run)."""
    from stampcheck.engine import load_engine
    from stampcheck.qa.evaluate import match_classes
    from stampcheck.engine.scores import by_stamp_size, summarise
    from stampcheck.engine.scores import judge_photos

    groups = {e["file"]: e["group"] for e in json.loads((folder / FIELD_JSON).read_text(encoding="utf-8"))["photos"]}
    items = read_labels(folder)
    if one_stage:
        from stampcheck.engine.torch_engine import Predictor

        runner = Predictor(model, device, verifier=False)
    else:
        runner = load_engine(model, engine, device)
    match_classes(items, list(runner.classes), folder)
    files = [folder / IMAGES_DIR / i.file for i in items]
    rows = []
    start = time.perf_counter()
    for item, r, judged in judge_photos(runner, items, files, bs=bs):
        if judged is None:
            raise FieldError(f"{folder}: {item.file} cannot be read ({r.error}): build the set again")
        size = max((max(b.width, b.height) for b in item.boxes), default=0) / min(r.width, r.height)
        rows.append({"file": item.file, "group": groups[item.file], "has_stamp": judged.has_stamp,
                     "score": round(judged.score, 4), "iou": round(judged.iou, 4), "size": round(size, 4),
                     "judged": judged})
    seconds = time.perf_counter() - start
    thr = runner.threshold
    results = [r.pop("judged") for r in rows]
    m = summarise(results, thr)
    flagged = [r["score"] >= thr for r in rows]
    rounds = [f for f, r in zip(flagged, rows) if r["group"] == "round-things"]
    free = [f for f, r in zip(flagged, rows) if r["group"] == "kept-out" and not r["has_stamp"]]
    return {
        "stamp": folder.name, "model": str(model), "engine": engine, "threshold": thr, "size": runner.size,
        "stages": 1 if getattr(runner, "look", None) is None else 2,
        **{k: m[k] for k in ("accuracy", "precision", "recall", "f1", "mean_iou", "iou50", "images", "stamped")},
        "by_size": by_stamp_size(results, [r["size"] for r in rows], thr, SIZE_EDGES),
        "round_things": {"photos": len(rounds), "flagged": sum(rounds)},
        "stamp_free_kept_out": {"photos": len(free), "flagged": sum(free), "share": sum(free) / max(1, len(free))},
        "seconds": round(seconds, 2), "photos_per_second": round(len(rows) / seconds, 2),
        "photos": rows,
    }


TABLE_HEAD = ("| stamp | model | stages | engine | accuracy | precision | recall | mean IoU | recall <0.2 / 0.2-0.3 / >=0.3 | "
              "round things flagged | stamp-free flagged | photos/s |\n"
              "|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|")


def table_row(s: dict) -> str:
    bands = {b["size"]: b["recall"] for b in s["by_size"]}
    names = [f"{lo:.2f}-{hi:.2f}" if hi != float("inf") else f">={lo:.2f}"  # by_stamp_size's names
             for lo, hi in zip(SIZE_EDGES, SIZE_EDGES[1:])]
    recall = " / ".join(f"{bands[n]:.2f}" if n in bands else "-" for n in names)
    rt, free = s["round_things"], s["stamp_free_kept_out"]
    return (f"| {s['stamp']} | {Path(s['model']).name} | {s['stages']} | {s['engine']} | {s['accuracy']:.3f} | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | {s['mean_iou']:.3f} | {recall} | {rt['flagged']} of {rt['photos']} | "
            f"{free['share']:.3f} ({free['flagged']} of {free['photos']}) | {s['photos_per_second']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stamp", required=True, help="a test stamp's name (bench/stamps/) or a .png path")
    ap.add_argument("--model", type=Path, help="a model folder to score (without: build the set and its preview)")
    ap.add_argument("--engine", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--device", help="the torch engine's device (default: as qa chooses)")
    ap.add_argument("--one-stage", action="store_true", help="the torch engine without the model's verifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("data/bench/field"))
    ap.add_argument("--json", type=Path, help="where the scores go (default OUT/STAMP/score-MODEL-ENGINE.json)")
    args = ap.parse_args(argv)
    try:
        stamp = stamp_path(args.stamp)
        folder = build_field(stamp, args.out, args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
        sheet = preview(folder, args.out / f"preview-{folder.name}.png")
        print(f"field set: {folder} (preview {sheet})", file=sys.stderr)
        if args.model is None:
            return errors.OK
        scores = score_field(args.model, folder, args.engine, args.device, one_stage=args.one_stage)
    except ValueError as e:  # FieldError, DatasetError, ModelError, classes the model lacks: all bad input
        print(f"error: {e}", file=sys.stderr)
        return errors.USAGE
    except KeyboardInterrupt:
        print("interrupted (a field set is written whole or not at all)", file=sys.stderr)
        return errors.INTERRUPTED
    stages = "-one-stage" if args.one_stage else ""
    path = args.json or folder / f"score-{args.model.resolve().name}-{args.engine}{stages}.json"
    atomic_write_json(path, scores)
    print(TABLE_HEAD)
    print(table_row(scores))
    print(f"({scores['images']} photos, threshold {scores['threshold']:.2f} at {scores['size']} px; {path})")
    return errors.OK


if __name__ == "__main__":
    sys.exit(main())
