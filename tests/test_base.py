"""The base detector: seal designs, images composed on the fly, pretraining that resumes, the
shipped weights, and training to a time budget."""

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.compose.seals import seal_design
from tests.conftest import photo
from stampcheck.train.budget import TimeBudget
from stampcheck.train.learner import TrainConfig, build_learner, train
from stampcheck.engine.config import ModelError
from stampcheck.train.model import base_path, build_model, load_base
from stampcheck.train import synthetic
from stampcheck.train.checkpoint import save_base
from stampcheck.train.pretrain import PretrainConfig, pretrain
from stampcheck.train.synthetic import Loader, SyntheticStamps, collate

ROOT = Path(__file__).resolve().parents[1]


def test_designs_differ_and_are_cropped_to_their_ink():
    masks = []
    for n in range(100):
        alpha = np.asarray(seal_design(n))[..., 3]
        ink = alpha > 8
        # tight: ink on every edge of the picture, so a box from the picture is the stamp's box
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any(), n
        masks.append(np.asarray(Image.fromarray(alpha).resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255)
    # no two alike: even the closest pair differs in a tenth of its ink at 32 x 32
    closest = min(np.abs(a - b).mean() / max(a.mean(), b.mean())
                  for i, a in enumerate(masks) for b in masks[i + 1:])
    assert closest > 0.1, closest
    assert np.array_equal(np.asarray(seal_design(7)), np.asarray(seal_design(7)))


def _synthetic(size=64, **kw):
    backgrounds = [photo(k, (200, 150)) for k in range(4)]
    return SyntheticStamps(24, size, seed=3, backgrounds=backgrounds, **kw)


def test_on_the_fly_images_are_the_same_in_any_worker_and_new_for_every_index():
    ds = _synthetic()
    direct = [ds[i] for i in range(8)]
    for workers in (0, 2):
        loader = Loader(ds, batch_size=4, num_workers=workers, collate_fn=collate)
        xb = torch.cat([b[0] for b, _ in zip(loader, range(2))])
        assert torch.equal(xb, torch.stack([d[0] for d in direct])), workers
    assert not torch.equal(direct[0][0], direct[1][0])
    other = _synthetic(offset=24)  # the next epoch: other images
    assert not any(torch.equal(other[i][0], direct[i][0]) for i in range(8))
    stamped = [d for d in direct + [ds[i] for i in range(8, 24)] if len(d[1])]
    assert stamped and all(((d[1] >= -1) & (d[1] <= 1)).all() and (d[1][:, 2:] > d[1][:, :2]).all() for d in stamped)


class _DrawsSeen(torch.utils.data.Dataset):
    """An on-the-fly image, then how many designs this process has drawn so far."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.ds[i]
        return torch.tensor(synthetic.design_stamp.cache_info().misses)


def test_designs_drawn_before_the_workers_start_are_not_drawn_again_in_them(monkeypatch):
    """pretrain draws the designs once, before the loader workers fork (they are new every epoch):
    a worker then draws none. Designs the parent never drew, the worker has to draw."""
    monkeypatch.setattr(synthetic, "DESIGNS", 40)
    synthetic.draw_designs(40)
    drawn = synthetic.design_stamp.cache_info().misses
    ds = _DrawsSeen(_synthetic())
    seen = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=1)))
    assert (seen == drawn).all(), (seen, drawn)
    monkeypatch.setattr(synthetic, "DESIGNS", 10_000)  # numbers the parent has not drawn
    seen = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=1)))
    assert seen.max() > drawn


@pytest.mark.slow
def test_on_the_fly_windows_are_crops_of_the_whole_image_holding_its_stamps(monkeypatch):
    """--crop: a window of the very image the uncropped dataset gives, placed around a stamp, its
    boxes the whole image's boxes moved by the window's corner. Only the window is JPEG-encoded and
    resized: without the JPEG step its pixels are the whole image's exactly, with it they differ by
    the codec's error alone."""
    whole, windows = _synthetic(), _synthetic(crop=40)
    with monkeypatch.context() as m:
        m.setattr(synthetic, "jpeg_round_trip", lambda img, quality: img)
        plain_whole, plain_windows = [whole[i][0] for i in range(24)], [windows[i][0] for i in range(24)]
    for i in range(24):
        (xw, bw, _), (xc, bc, _) = whole[i], windows[i]
        assert xc.shape == (3, 40, 40) and torch.equal(xc, windows[i][0])
        # where the window lies in the whole image: the one corner whose pixels match
        corners = [(x, y) for y in range(25) for x in range(25)
                   if torch.equal(plain_whole[i][:, y:y + 40, x:x + 40], plain_windows[i])]
        assert len(corners) >= 1, i
        x0, y0 = corners[0]
        # JPEG's error alone on a detailed window: up to about 5 of 255 levels
        assert (xw[:, y0:y0 + 40, x0:x0 + 40] - xc).abs().mean() < 0.15, i
        assert bool(len(bw)) == bool(len(bc)), i  # a stamped image gives a stamped window
        px_whole = (bw + 1) / 2 * 64 - torch.tensor([x0, y0, x0, y0])
        px_crop = (bc + 1) / 2 * 40
        inside = [b for b in px_whole if b[0] >= -1e-3 and b[1] >= -1e-3 and b[2] <= 40 + 1e-3 and b[3] <= 40 + 1e-3]
        assert all(any(torch.allclose(c, b, atol=1e-3) for c in px_crop) for b in inside), i
    # a stamp larger than its window is clipped to it, never left degenerate
    tight = [b for i in range(24) for b in _synthetic(crop=20)[i][1]]
    assert all(((b >= -1) & (b <= 1)).all() and (b[2:] - b[:2] > 0.05).all() for b in tight)
    assert any((b.abs() == 1).any() for b in tight), "no stamp was clipped: the case is not exercised"
    with pytest.raises(ValueError, match="--crop 64 must be smaller"):
        _synthetic(crop=64)


@pytest.mark.slow
def test_pretrain_init_starts_from_the_given_base_and_its_card_says_so(tmp_path):
    cfg = PretrainConfig(size=64, crop=48, init=str(base_path("resnet18")), epochs=1, epoch_images=16,
                         valid_images=8, bs=8, lr=1e-6, workers=0)
    pretrain(tmp_path / "run", cfg, log=lambda *a: None)
    start = torch.load(base_path("resnet18"), weights_only=True)
    after = torch.load(tmp_path / "run" / "base.pth", weights_only=True)
    for k in ("stem.0.weight", "smooth.0.0.weight", "out.weight"):  # a step of 1e-6 from the base, not random
        assert torch.allclose(after[k].float(), start[k].float(), atol=1e-2), k
    card = (tmp_path / "run" / "card.md").read_text()
    assert hashlib.sha256(base_path("resnet18").read_bytes()).hexdigest() in card and "--crop 48" in card
    with pytest.raises(ValueError, match="keeps the run's own settings"):  # other windows: another run
        pretrain(tmp_path / "run", PretrainConfig(crop=32), resume=True, log=lambda *a: None)
    pretrain(tmp_path / "run", PretrainConfig(), resume=True, epochs_changed=2, log=lambda *a: None)
    state = _state(tmp_path / "run")
    assert state["epochs_done"] == 2 and state["config"]["crop"] == 48 and state["config"]["init"] == cfg.init
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a base detector file"):
        pretrain(tmp_path / "other", PretrainConfig(size=64, init=str(junk), epochs=1, workers=0), log=lambda *a: None)
    assert not (tmp_path / "other").exists()  # a refused start leaves no folder behind
    with pytest.raises(ModelError, match="does not fit this network"):  # another arch's base: one line
        pretrain(tmp_path / "other", PretrainConfig(arch="resnet34", size=64, init=cfg.init, workers=0), log=lambda *a: None)


def _state(out: Path) -> dict:
    try:
        return json.loads((out / "state.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_pretrain_killed_mid_epoch_resumes_and_finishes(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "stampcheck", "pretrain", "--out", str(out), "--arch", "resnet18", "--size", "64",
            "--epochs", "4", "--epoch-images", "48", "--valid-images", "8", "--bs", "8", "--workers", "0"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _state(out).get("epochs_done", 0) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _state(out).get("epochs_done", 0) >= 1, "the first epoch never finished"
    proc.send_signal(signal.SIGKILL)  # in the second epoch (or the third on a fast machine)
    proc.wait()
    assert _state(out)["epochs_done"] < 4
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert again.returncode == 2 and "--resume" in again.stdout + again.stderr  # never silently restarted
    done = subprocess.run(args + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    state = _state(out)
    assert state["epochs_done"] == 4 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    card = (out / "card.md").read_text()
    assert hashlib.sha256((out / "base.pth").read_bytes()).hexdigest() in card
    assert not list(out.glob(".*.part"))
    longer = subprocess.run(args + ["--resume", "--epochs", "5"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert longer.returncode == 0, longer.stdout + longer.stderr
    assert _state(out)["epochs_done"] == 5
    card = (out / "card.md").read_text()  # says how the schedule really ran
    assert "--epochs 4 " in card and "after epoch 4 lengthened to 5" in card


@pytest.mark.slow
def test_shipped_base_matches_its_card_and_loads():
    path = base_path("resnet18")
    card = path.with_suffix(".md").read_text()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert re.search(rf"sha256: `{sha}`", card), "the card's sha256 is not the file's"
    assert path.stat().st_size <= 25 * 2 ** 20
    model, source = build_model("resnet18", 2, pretrained="base")
    assert path.name in source
    state = torch.load(path, weights_only=True)
    for k in ("stem.0.weight", "smooth.0.0.weight"):
        assert torch.equal(model.state_dict()[k], state[k].float())
    # each class's score starts from the base's one score
    assert torch.equal(model.out.weight[0], model.out.weight[1])
    assert all(torch.isfinite(v.float()).all() for v in state.values()), "a non-finite value in the base"


@pytest.mark.slow
def test_base_keeps_batchnorm_statistics_past_fp16s_range(tmp_path):
    """The neck's running variances pass 65504; stored in fp16 they became inf, and an inf running
    variance never decays in fine-tuning: the channel is silenced at inference. A base holding one is refused."""
    model, _ = build_model("resnet18", 1, pretrained="none")
    model.smooth[0][1].running_var.fill_(129_000.0)
    path = tmp_path / "base.pth"
    save_base(model, path)
    state = torch.load(path, weights_only=True)
    assert state["smooth.0.0.weight"].dtype == torch.float16  # weights stay half the bytes
    assert torch.equal(state["smooth.0.1.running_var"], model.smooth[0][1].running_var)
    target, _ = build_model("resnet18", 1, pretrained="none")
    load_base(target, path)
    assert torch.equal(target.smooth[0][1].running_var, model.smooth[0][1].running_var)
    state["smooth.0.1.running_var"] = state["smooth.0.1.running_var"].half()  # as the old files stored it
    torch.save(state, path)
    with pytest.raises(ModelError, match="not finite"):
        load_base(target, path)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    looks = Looks(scale=(0.2, 0.4), hard_negative_share=0.3, truncate_share=0.0, multi_share=0.0)
    compose_dataset(ComposeConfig(count=96, seed=5, max_size=160, looks=looks, valid_share=0.25), out)
    return out


@pytest.mark.slow
def test_training_from_the_base_beats_the_same_steps_from_scratch(small_set, tmp_path):
    cfg = dict(arch="resnet18", size=128, epochs=2, bs=16, lr=2e-3, workers=0, augment=False)
    base = train(small_set, tmp_path / "base", TrainConfig(verifier=False, pretrained="base", **cfg), log=lambda *a: None)
    scratch = train(small_set, tmp_path / "scratch", TrainConfig(verifier=False, pretrained="none", **cfg), log=lambda *a: None)
    b, s = base["final"], scratch["final"]
    assert b["mean_iou"] > s["mean_iou"] + 0.1 and b["correct"] >= s["correct"], (b, s)


@pytest.mark.slow
def test_minutes_schedule_follows_the_clock_when_the_machine_slows(small_set, tmp_path):
    """A run planned for far more batches than the time allows (the machine slowed after the plan)
    still ends its one-cycle: the last training batch runs at the bottom of the schedule, and the
    cut epoch is validated with its metrics in their columns. The clock: 0.5 s per batch."""
    learn, *_ = build_learner(small_set, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=64, bs=16, workers=0,
                                                               pretrained="none", augment=False), log=lambda *a: None)
    lrs, ticks = [], iter(range(10_000))

    class Record(Callback):
        def after_batch(self):
            if self.training:
                lrs.append(self.opt.hypers[-1]["lr"])

    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(50, 2e-3, cbs=[TimeBudget(6.0, clock=lambda: 0.25 * next(ticks)), Record()])
    assert len(lrs) == 12  # 6 s of 0.5 s batches (the first tick starts the clock)
    assert not torch.is_autocast_enabled("cpu")  # no batch was left half done
    assert max(lrs) > 1e-3 and lrs[-1] < 0.05 * max(lrs), lrs
    assert len(learn.recorder.values) >= 2
    names = learn.recorder.metric_names[1:-1]
    last = dict(zip(names, learn.recorder.values[-1]))
    assert len(learn.recorder.values[-1]) == len(names) and 0 <= last["accuracy"] <= 1, last


def test_a_slower_valid_pass_moves_the_end_of_training_earlier():
    """The plan timed a 10 s valid pass and set aside 3 such passes for finishing; on a machine that
    slowed, an epoch's valid pass takes 30 s: the training ends 20 s x (1 + 3) earlier, so that the
    whole command stays within --minutes. A faster pass gives the time back."""
    now = [0.0]
    budget = TimeBudget(100.0, clock=lambda: now[0], valid_s=10.0, finish_per_valid=3.0)
    budget.before_fit()
    now[0] = 40.0
    budget.before_validate()
    now[0] = 70.0
    budget.after_validate()
    assert budget.seconds == 100.0 - 20.0 * 4 and budget.progress() >= 1
    now[0] = 80.0
    budget.before_validate()
    now[0] = 85.0
    budget.after_validate()
    assert budget.seconds == 20.0 + 25.0 * 4


@pytest.mark.slow
def test_minutes_stops_within_its_budget(small_set, tmp_path):
    logs = []
    start = time.time()
    metrics = train(small_set, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=64, minutes=0.5, bs=16, workers=0,
                                                     pretrained="none"), log=logs.append)
    took = time.time() - start
    assert any(line.startswith("time: ") for line in logs), logs
    assert 0.5 * 30 < took <= 1.1 * 30, took
    assert len(metrics["epochs"]) >= 2  # the measured speed bought more than the default's guess of one
