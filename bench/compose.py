"""Compose speed against its floor, measured in one run on the same backgrounds.

floor:   decode (same draft scale) + resize to the output size + JPEG encode + write, nothing else
compose: the same plus the stamp, distractors and looks (stampcheck.compose.composer.render_one)
Also the whole `compose_dataset` with 1 and 2 workers (background scan and label files included).

    python -m bench.compose [--backgrounds DIR] [--count N]   (from the project root)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stampcheck.compose.backgrounds import builtin_source, scan_folder
from stampcheck.compose.composer import ComposeConfig, _init_worker, assign_splits, compose_dataset, plan_backgrounds, render_one
from stampcheck.compose.stamps import load_stamp
from stampcheck.atomic import atomic_write_bytes
from stampcheck.images import ImageLimits, jpeg_bytes
from stampcheck.progress import no_progress

DEFAULT_BACKGROUNDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backgrounds", type=Path, default=DEFAULT_BACKGROUNDS if DEFAULT_BACKGROUNDS.is_dir() else None)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = ComposeConfig(count=args.count, seed=0, backgrounds=args.backgrounds)
    limits = ImageLimits()
    source = scan_folder(args.backgrounds, limits, no_progress) if args.backgrounds else builtin_source(args.count // 4)
    plan = plan_backgrounds(source.names, cfg.count, cfg.seed)
    splits = assign_splits(source.names, cfg.seed, cfg.valid_share)
    tmp = Path(tempfile.mkdtemp(prefix="bench-compose-"))
    print(f"backgrounds: {args.backgrounds or 'built-in'} ({len(source.names)}), images: {cfg.count}")
    try:
        _init_worker(cfg, source, [load_stamp(p) for p in cfg.stamps], tmp / "c")
        floor_t, comp_t = [], []
        for _ in range(args.repeats):  # interleaved, best of N: the machine is shared and noisy
            t = time.perf_counter()
            for i, name in enumerate(plan):
                img = source.load(name, cfg.max_size, limits)
                atomic_write_bytes(tmp / "f" / f"{i:06d}.jpg", jpeg_bytes(img, 80))
            floor_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            for i, name in enumerate(plan):
                render_one(i, name, splits[name])
            comp_t.append(time.perf_counter() - t)
        floor, comp = min(floor_t), min(comp_t)
        print(f"floor   (decode+resize+encode): {cfg.count / floor:8.1f} images/s")
        print(f"compose (1 process, render)   : {cfg.count / comp:8.1f} images/s")
        print(f"compose / floor time per image: {comp / floor:8.2f}x   (goal <= 1.3x)")
        whole = {}
        for w in (1, 2):
            shutil.rmtree(tmp / f"w{w}", ignore_errors=True)
            t = time.perf_counter()
            compose_dataset(cfg, tmp / f"w{w}", workers=w)
            whole[w] = time.perf_counter() - t
            print(f"compose_dataset, {w} worker(s)  : {cfg.count / whole[w]:8.1f} images/s")
        print(f"speed-up 1 -> 2 workers        : {whole[1] / whole[2]:8.2f}x   (goal near 2x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
