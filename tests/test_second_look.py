"""The second look's torch-free parts: where crops are cut, and what the verifier's answers make of a photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stampcheck.engine.decode import PhotoResult
from stampcheck.engine.config import verifier_problem
from stampcheck.engine.second_look import LookConfig, crop, crop_window, detail_view, rescore

RED = (220, 20, 20)


def photo_with_square(box, size=(800, 600)) -> Image.Image:
    img = Image.new("RGB", size, (90, 140, 200))
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=RED)
    return img


def is_red(px) -> np.ndarray:
    return (px[0] > 180) & (px[1] < 70) & (px[2] < 70)


def test_the_crop_is_the_candidate_box_with_its_margin_whatever_the_detail_size():
    box = (300, 200, 420, 280)  # 120 x 80 px in the photo's own pixels
    img = photo_with_square(box)
    for detail in (800, 400, 200):  # the photo as stored, and brought down for the verifier
        look = LookConfig(size=96, margin=0.25, detail=detail)
        view = detail_view(img, detail)
        assert max(view.size) == min(detail, 800)
        c = crop(view, box, img.size, look)
        assert c.shape == (3, 96, 96) and c.dtype == np.uint8
        red = is_red(c)
        # the window is 1.5x the long side (120 -> 180 px), square, centred on the box: the box
        # spans the middle 120/180 of its width and 80/180 of its height
        cols, rows = np.flatnonzero(red.any(0)), np.flatnonzero(red.any(1))
        assert abs(cols[0] - 96 * 30 / 180) <= 2 and abs(cols[-1] + 1 - 96 * 150 / 180) <= 2
        assert abs(rows[0] - 96 * 50 / 180) <= 2 and abs(rows[-1] + 1 - 96 * 130 / 180) <= 2
        assert red[48, 48] and not red[2, 2]


def test_a_crop_past_the_photo_edge_keeps_the_box_centred_and_fills_black():
    img = photo_with_square((0, 0, 60, 60), size=(300, 300))
    c = crop(img, (0, 0, 60, 60), img.size, LookConfig(size=90, margin=0.5))
    assert crop_window((0, 0, 60, 60), 0.5) == (-30, -30, 90, 90)
    assert c[:, :20, :20].max() == 0  # outside the photo
    assert is_red(c)[45, 45]


def result_with(cands) -> PhotoResult:
    r = PhotoResult(Path("x.jpg"), 800, 600, score=cands[0][0], top_box=list(cands[0][2]))
    r.detections = [(s, "seal", list(b)) for s, _, b in cands]
    return r


def test_the_verifier_decides_presence_box_and_class():
    # the detector's best candidate is a bottle cap; its third is the stamp
    r = result_with([(0.9, "seal", (0, 0, 10, 10)), (0.5, "seal", (20, 20, 40, 40)), (0.2, "seal", (50, 50, 90, 90))])
    probs = np.array([[0.95, 0.04, 0.01], [0.7, 0.2, 0.1], [0.05, 0.15, 0.8]])
    rescore(r, probs, ["ours", "lab"], keep=0.5)
    assert r.detector_score == 0.9
    assert r.score == 0.8 and r.top_box == [50, 50, 90, 90]
    assert r.detections == [(0.8, "lab", [50, 50, 90, 90])]
    assert r.found() == r.detections
    r.threshold = 0.85
    assert r.found() == []


def test_no_candidate_is_a_photo_without_stamp():
    r = PhotoResult(Path("x.jpg"), 800, 600, score=0.03, top_box=[1, 2, 3, 4])
    r.detections = []
    rescore(r, np.zeros((0, 2)), ["ours"], keep=0.5)
    assert r.score == 0.0 and r.detections == [] and r.top_box == [1, 2, 3, 4] and r.detector_score == 0.03


def test_a_stored_verifier_config_is_checked():
    good = {"size": 96, "margin": 0.25, "top_k": 3, "detail": 512, "candidate_threshold": 0.05, "threshold": 0.6}
    assert verifier_problem(good) is None
    for key, bad in (("size", 100000), ("top_k", 0), ("threshold", float("nan")), ("threshold", -1),
                     ("margin", "wide"), ("detail", True), ("candidate_threshold", None)):
        assert key in verifier_problem({**good, key: bad})
    assert verifier_problem([1]) is not None


def test_a_verifier_config_problem_is_one_short_line_whatever_the_value():
    good = {"size": 96, "margin": 0.25, "top_k": 3, "detail": 512, "candidate_threshold": 0.05, "threshold": 0.6}
    for key in ("size", "threshold"):
        problem = verifier_problem({**good, key: "9" * 100_000})
        assert key in problem and len(problem) < 200 and "\n" not in problem


def test_a_window_far_past_the_photo_costs_no_more_than_the_photo():
    """A photo-wide box with the widest margin the config allows: its window is 5x the photo's side
    (225 MP here), of which only the photo itself is resized, into the middle fifth."""
    import warnings

    img = photo_with_square((0, 0, 3000, 3000), size=(3000, 3000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning included
        c = crop(img, (0, 0, 3000, 3000), img.size, LookConfig(size=100, margin=2.0, detail=3000))
    red = is_red(c)
    cols, rows = np.flatnonzero(red.any(0)), np.flatnonzero(red.any(1))
    assert (cols[0], cols[-1] + 1, rows[0], rows[-1] + 1) == (40, 60, 40, 60)
    assert c[:, :40].max() == 0 and c[:, 60:].max() == 0
