"""Things in front of a stamp: a finger holding the product, or the edge of a bottle cap.

A camera at the dispatch door sees stamps partly hidden by a hand or by the next product. Each
occluder is drawn from a signed distance (a capsule for a finger, a disk for a cap) with a soft edge
and shading across it, so its outline is as smooth as a real one and no hard paste edge becomes a
cue. It comes in from one side and hides between 15% and 45% of the mark's extent, so the stamp
stays recognisable and its label stays true; stamp-free images get the same occluders.
"""

from __future__ import annotations

import numpy as np

# skin from pale to dark (RGB), and the colours of caps seen edge on
SKIN = (np.array([92.0, 60.0, 45.0]), np.array([236.0, 198.0, 172.0]))
CAP_COLOURS = ((245, 245, 242), (30, 70, 170), (200, 30, 35), (25, 25, 25), (150, 155, 160), (30, 130, 60))
DEPTH = (0.15, 0.45)   # share of the mark's extent hidden, from the side the occluder comes in
EDGE_PX = 1.5          # width of the soft edge, in pixels


def add_occluder(canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Draw a finger or a cap edge over part of ``box`` (x0, y0, x1, y1) of ``canvas`` (uint8 RGB, in place)."""
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = box
    bw, bh = max(1, x1 - x0), max(1, y1 - y0)
    side = int(rng.integers(4))  # the occluder comes in from the left, right, top or bottom
    inward = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]][side])
    depth = rng.uniform(*DEPTH) * (bw if side < 2 else bh)
    entry = np.array([x0 if side == 0 else x1 if side == 1 else rng.uniform(x0, x1),
                      y0 if side == 2 else y1 if side == 3 else rng.uniform(y0, y1)])
    if side < 2:
        entry[1] = rng.uniform(y0, y1)
    tip = entry + inward * depth  # the deepest point the occluder reaches inside the box
    finger = rng.random() < 0.5
    if finger:
        angle = rng.uniform(-0.5, 0.5)
        c, s = np.cos(angle), np.sin(angle)
        direction = np.array([c * inward[0] - s * inward[1], s * inward[0] + c * inward[1]])
        radius = rng.uniform(0.03, 0.07) * min(W, H)  # a finger's half-width, as hands are in shop photos
        end = tip - direction * radius  # the capsule's rounded end touches the tip
        start = end - direction * 8 * radius
        colour = SKIN[0] + rng.random() * (SKIN[1] - SKIN[0]) + rng.normal(0, 6, 3)
    else:
        radius = rng.uniform(0.06, 0.16) * min(W, H)  # a cap's radius, seen from above at arm's length
        centre = tip - inward * radius
        colour = np.array(CAP_COLOURS[int(rng.integers(len(CAP_COLOURS)))], dtype=np.float64)
    reach = int(10 * radius) + 2
    wx0, wy0 = max(0, int(tip[0]) - reach), max(0, int(tip[1]) - reach)
    wx1, wy1 = min(W, int(tip[0]) + reach), min(H, int(tip[1]) + reach)
    if wx1 <= wx0 or wy1 <= wy0:
        return
    ys, xs = np.mgrid[wy0:wy1, wx0:wx1].astype(np.float32)
    if finger:
        seg = end - start
        t = np.clip(((xs - start[0]) * seg[0] + (ys - start[1]) * seg[1]) / float(seg @ seg), 0, 1)
        dist = np.hypot(xs - (start[0] + t * seg[0]), ys - (start[1] + t * seg[1]))
    else:
        dist = np.hypot(xs - centre[0], ys - centre[1])
    inside = np.clip((radius - dist) / radius, 0, 1)
    alpha = np.clip((radius - dist) / EDGE_PX + 0.5, 0, 1)[..., None]
    # rounded: lit along its middle, darker towards the edges, as a finger is; a cap's rim is a
    # darker ring round a flat top
    if finger:
        shade = 0.7 + 0.4 * np.sqrt(inside) * rng.uniform(0.6, 1.0)
    else:
        shade = np.where(inside < rng.uniform(0.08, 0.2), 0.75, 1.0) * rng.uniform(0.85, 1.05)
    shade = shade[..., None]
    top = np.clip(colour * shade + rng.normal(0, 3, (*dist.shape, 1)), 0, 255)
    region = canvas[wy0:wy1, wx0:wx1].astype(np.float32)
    canvas[wy0:wy1, wx0:wx1] = np.clip(region + alpha * (top - region) + 0.5, 0, 255).astype(np.uint8)


def random_spot(W: int, H: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box the size a stamp might be, anywhere in a W x H image: where a stamp-free image's
    occluder goes, so an occluder alone never says "stamp"."""
    side = int(min(W, H) * rng.uniform(0.1, 0.5))
    x = int(rng.integers(0, max(1, W - side)))
    y = int(rng.integers(0, max(1, H - side)))
    return x, y, x + side, y + side
