"""Compose a labelled dataset: plan (splits, background per image), render in parallel, write labels.

Every image ``i`` is a pure function of (seed, i, parameters, backgrounds), so the output is
byte-identical whatever the number of workers, and a re-run only renders what is missing. Each
finished image leaves ``.parts/NNNNNN.json`` beside it; the label files are written from those at
the end, atomically, so an interrupted run never leaves half-written labels.

``--out`` is a new or empty folder, or a dataset compose wrote; ``overwrite`` then removes only
the files that dataset wrote (see :func:`remove_dataset`), never anything else in the folder. One
run at a time writes it (stampcheck.paths.lock_output), from its first change to its preview.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from stampcheck.compose.backgrounds import BackgroundSource, builtin_source, scan_folder
from stampcheck.compose.folder import PARTS_DIR, is_dataset, remove_dataset, summary_of
from stampcheck.compose.looks import Looks, compose_image
from stampcheck.compose.preview import write_preview
from stampcheck.compose.stamps import DEFAULT_STAMP, Stamp, load_stamp
from stampcheck.compose.workers import WorkerPool
from stampcheck.atomic import atomic_write_bytes, atomic_write_text, remove_own_partials
from stampcheck.dataset import DATASET_JSON, IMAGES_DIR, Box, ImageLabels, write_label_files, yolo_folders
from stampcheck.images import ImageLimits, ImageRejected, jpeg_bytes
from stampcheck.paths import holds_files, lock_output, refuse_held, refuse_links, refuse_overlap
from stampcheck.progress import no_progress
from stampcheck.tool_files import tool_files_problem, tool_folders, write_tool_files



@dataclass
class ComposeConfig:
    count: int = 1000
    seed: int = 0
    stamps: list[Path] = field(default_factory=lambda: [DEFAULT_STAMP])
    backgrounds: Path | None = None     # None: built-in generated scenes
    builtin_backgrounds: int = 0        # how many scenes to generate; 0 means count // 4
    builtin_offset: int = 0             # first scene number: another offset gives unseen scenes
    max_size: int = 512                 # long side of the written images
    valid_share: float = 0.2
    min_background_side: int = 64
    looks: Looks = field(default_factory=Looks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stamps"] = [str(p) for p in self.stamps]
        d["backgrounds"] = str(self.backgrounds) if self.backgrounds else None
        return d


class ComposeError(RuntimeError):
    pass


def assign_splits(names: list[str], seed: int, valid_share: float) -> dict[str, str]:
    """Whole backgrounds go to one split, so no background is seen in both (no leak)."""
    order = np.random.default_rng([seed, 1]).permutation(len(names))
    n_valid = int(round(len(names) * valid_share))
    if len(names) >= 2 and valid_share > 0:
        n_valid = min(max(1, n_valid), len(names) - 1)
    return {names[j]: ("valid" if k < n_valid else "train") for k, j in enumerate(order)}


def plan_backgrounds(names: list[str], count: int, seed: int) -> list[str]:
    """Background of each image: shuffled cycles, so every background is used about equally."""
    rng = np.random.default_rng([seed, 2])
    plan: list[str] = []
    while len(plan) < count:
        plan.extend(names[j] for j in rng.permutation(len(names)))
    return plan[:count]


# The job's state in each process: set directly in-process, or loaded once per worker from the
# pickle the parent wrote (the pool exists before the job's state is known).
_worker: dict = {}


def _init_worker(cfg: ComposeConfig, source: BackgroundSource, stamps: list[Stamp], out: Path) -> None:
    _worker.update(cfg=cfg, source=source, stamps=stamps, out=out,
                   limits=ImageLimits(min_side=cfg.min_background_side))


def _render_task(task):
    state_file, args = task
    if _worker.get("state_file") != state_file:
        _init_worker(*pickle.loads(Path(state_file).read_bytes()))
        _worker["state_file"] = state_file
    return render_one(*args)


def render_one(index: int, background: str, split: str) -> dict:
    """Render image ``index`` and write it and its part file; return the part record."""
    cfg: ComposeConfig = _worker["cfg"]
    out: Path = _worker["out"]
    rng = np.random.default_rng([cfg.seed, 3, index])
    name = f"{index:06d}.jpg"
    try:
        bg = _worker["source"].load(background, cfg.max_size, _worker["limits"])
    except ImageRejected as e:  # passed the scan but failed now (changed on disk): report, go on
        record = {"index": index, "file": name, "error": f"{background}: {e}"}
        atomic_write_text(out / PARTS_DIR / f"{index:06d}.json", json.dumps(record))
        return record
    img, boxes, hard = compose_image(bg, _worker["stamps"], cfg.looks, rng)
    quality = int(rng.integers(cfg.looks.jpeg_quality[0], cfg.looks.jpeg_quality[1] + 1))
    atomic_write_bytes(out / IMAGES_DIR / name, jpeg_bytes(img, quality))
    record = {"index": index, "file": name, "split": split, "background": background,
              "width": img.width, "height": img.height, "hard_negative": bool(hard),
              "boxes": [[b.x0, b.y0, b.x1, b.y1, b.label] for b in boxes]}
    atomic_write_text(out / PARTS_DIR / f"{index:06d}.json", json.dumps(record))
    return record


def _spawn_can_start() -> bool:
    """Spawned workers re-import the main module; from stdin or a notebook cell there is no file to
    import and every worker would die as it starts, so compose in-process instead."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None and getattr(main, "__spec__", None) is not None or bool(path and Path(path).is_file())


def fingerprint(cfg: ComposeConfig, stamps: list[Stamp], names: list[str]) -> str:
    blob = json.dumps([cfg.to_dict(), [s.sha256 for s in stamps], names], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def compose_dataset(cfg: ComposeConfig, out: Path, workers: int = 1, overwrite: bool = False,
                    progress=None, preview: bool = False) -> dict:
    """Compose ``cfg.count`` images into ``out`` (and ``preview``: preview.png); return the summary
    written to dataset.json.

    ``progress(total, description)`` is a context manager yielding ``advance(n)`` (a progress bar).
    """
    out = Path(out)
    progress = progress or no_progress
    refuse_overlap(out, [cfg.backgrounds, *cfg.stamps])
    refuse_links(out / IMAGES_DIR, out / PARTS_DIR, *yolo_folders(out), *tool_folders(out))
    if out.exists() and not out.is_dir():
        raise ComposeError(f"--out {out} is a file; give a folder")
    if out.is_dir() and holds_files(out) and not is_dataset(out):
        raise ComposeError(f"--out {out} is not empty and holds no stampcheck dataset (no {DATASET_JSON}); "
                           "compose writes only into a new or empty folder or a dataset it composed: "
                           "choose another --out")
    refuse_held(out)  # another run writing there: said now, not after the backgrounds are read
    problem = tool_files_problem(out, not is_dataset(out) or summary_of(out).get("tool_files", False))
    if problem:
        raise ComposeError(problem)
    stamps = [load_stamp(p) for p in cfg.stamps]
    if len({s.name for s in stamps}) != len(stamps):
        raise ComposeError("two stamps share a file name; the name is the class, so rename one")
    pool = WorkerPool(workers) if workers > 1 and _spawn_can_start() else None
    try:
        source = _backgrounds(cfg, pool, progress)
        fp = fingerprint(cfg, stamps, source.names)
        _refuse_other_dataset(out, fp, overwrite)  # before the lock makes the folder
        with lock_output(out, "compose"):
            _refuse_other_dataset(out, fp, overwrite)  # as it is now that no other run can change it
            summary = _compose(cfg, stamps, source, fp, out, pool, overwrite, progress)
            if preview and summary["images"]:
                write_preview(out)
            return summary
    finally:
        if pool is not None:
            pool.close()


def _backgrounds(cfg: ComposeConfig, pool, progress) -> BackgroundSource:
    limits = ImageLimits(min_side=cfg.min_background_side)
    if cfg.backgrounds:
        imap = partial(pool.map, chunksize=16) if pool else map
        source = scan_folder(Path(cfg.backgrounds), limits, progress, imap=imap)
    else:
        source = builtin_source(cfg.builtin_backgrounds or max(8, cfg.count // 4), cfg.builtin_offset)
    if not source.names:
        raise ComposeError(f"no usable background in {cfg.backgrounds} ({len(source.skipped)} files "
                           "skipped, reasons: " + ", ".join(sorted({s['reason'] for s in source.skipped})) + ")")
    return source


def _refuse_other_dataset(out: Path, fp: str, overwrite: bool) -> None:
    marker = out / PARTS_DIR / "fingerprint"
    if is_dataset(out) and not overwrite and not (marker.is_file() and marker.read_text() == fp):
        raise ComposeError(f"{out} holds a dataset composed with other parameters; "
                           "choose another --out or pass --overwrite")


def _compose(cfg, stamps, source: BackgroundSource, fp: str, out: Path, pool, overwrite: bool, progress) -> dict:
    parts = out / PARTS_DIR
    marker = parts / "fingerprint"
    if overwrite and is_dataset(out):
        remove_dataset(out)
    atomic_write_text(marker, fp)  # first, so that a run killed at once leaves a folder known as ours
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    # any name: every file in these folders is compose's; only dead writers' temporaries go
    remove_own_partials(out / IMAGES_DIR, ".+")
    remove_own_partials(parts, ".+")

    splits = assign_splits(source.names, cfg.seed, cfg.valid_share)
    plan = plan_backgrounds(source.names, cfg.count, cfg.seed)
    todo = [(i, bg, splits[bg]) for i, bg in enumerate(plan)
            if not ((parts / f"{i:06d}.json").exists() and (out / IMAGES_DIR / f"{i:06d}.jpg").exists())]
    init = (cfg, source, stamps, out)
    with progress(len(todo), "composing") as advance:
        if pool is None:
            _init_worker(*init)
            for args in todo:
                render_one(*args)
                advance(1)
        else:
            state_file = str(parts / "state.pkl")
            atomic_write_bytes(Path(state_file), pickle.dumps(init))
            for _ in pool.map(_render_task, [(state_file, t) for t in todo], chunksize=4):
                advance(1)
    return write_dataset(out, cfg, stamps, source, splits)


def write_dataset(out: Path, cfg: ComposeConfig, stamps: list[Stamp], source: BackgroundSource,
                  splits: dict[str, str]) -> dict:
    """Gather the part records of images 0..count-1 into the label files and dataset.json."""
    records = [json.loads((out / PARTS_DIR / f"{i:06d}.json").read_text()) for i in range(cfg.count)]
    failed = [r for r in records if "error" in r]
    items = [ImageLabels(r["file"], r["split"], r["background"],
                         [Box(*b[:4], label=b[4]) for b in r["boxes"]], r["width"], r["height"])
             for r in records if "error" not in r]
    classes = sorted({s.name for s in stamps})
    write_label_files(out, items, classes)
    write_tool_files(out, items, classes)
    summary = {
        "images": len(items),
        "stamped": sum(i.has_stamp for i in items),
        "negatives": sum(not i.has_stamp for i in items),
        "hard_negatives": sum(r.get("hard_negative", False) for r in records),
        "stamp_instances": {c: sum(b.label == c for i in items for b in i.boxes) for c in classes},
        "splits": {s: sum(i.split == s for i in items) for s in ("train", "valid")},
        "classes": classes,
        "seed": cfg.seed,
        "parameters": cfg.to_dict(),
        "stamps": [{"class": s.name, "file": str(p), "sha256": s.sha256} for s, p in zip(stamps, cfg.stamps)],
        "backgrounds": [{"name": n, "split": splits[n]} for n in source.names],
        "skipped_backgrounds": source.skipped,
        "failed_images": failed,
        "tool_files": True,  # classes.txt, labels/ and yolo/'s CVAT files are compose's (stampcheck.tool_files)
    }
    atomic_write_text(out / DATASET_JSON, json.dumps(summary, indent=2))
    return summary
