import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.dataset import DatasetError, ImageLabels, read_labels
from stampcheck.train.data import _cut, _window_range, stamp_dataloaders, valid_sample
from stampcheck.train.detect import StampLoss, assign, plain
from stampcheck.device import cpu_has_bf16
from stampcheck.train.callbacks import EpochLog
from stampcheck.train.learner import CPU_CROP, CPU_SIZE, TrainConfig, build_learner, train
from stampcheck.train.model import build_model
from stampcheck.engine.torch_engine import Predictor
from stampcheck.train.views import pick_view, view_sizes
from tests.conftest import write_exif_rotated

ROOT = Path(__file__).resolve().parents[1]
# Big, clear stamps so tiny CPU runs learn something in seconds.
EASY = Looks(scale=(0.3, 0.45), fade=(0.0, 0.1), opacity=(0.9, 1.0), blur=(0.0, 0.3), noise=(0.0, 2.0),
             glare_share=0.0, hard_negative_share=0.0, truncate_share=0.0, multi_share=0.0, negative_share=0.3,
             rotation=15, perspective=0.05, occlude_share=0.0)


def square_dataset(root: Path, n: int = 8) -> Path:
    """White squares at known places on black: the boxes are obvious from the pixels."""
    (root / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.zeros((96, 128, 3), np.uint8)
        x0, y0 = int(rng.integers(10, 70)), int(rng.integers(10, 40))
        img[y0:y0 + 30, x0:x0 + 40] = 255
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        rows.append({"file": f"{i}.png", "split": "valid" if i >= n - 2 else "train", "background": f"b{i}",
                     "has_stamp": 1, "x0": x0, "y0": y0, "x1": x0 + 40, "y1": y0 + 30, "class": "square"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_augmentation_moves_boxes_with_pixels(tmp_path):
    torch.manual_seed(0)
    dls, _ = stamp_dataloaders(square_dataset(tmp_path, n=12), size=64, bs=8, workers=0, device=torch.device("cpu"))
    xb, boxes, labels = dls.train.one_batch()
    xb, boxes = plain(xb), plain(boxes)
    moved = 0
    for b in range(len(xb)):
        bright = xb[b].mean(0) > 1.0  # normalised white
        ys, xs = torch.nonzero(bright, as_tuple=True)
        pix = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        box = (boxes[b, 0] + 1) / 2 * 64
        assert (box - pix).abs().max() <= 3.0, (b, box, pix)
        moved += 1
    assert moved == 8


def test_phone_photos_train_upright_as_labelled(tmp_path):
    """labels.csv's boxes are in the photo's upright pixels: a photo stored sideways with an EXIF
    orientation (as phones store them) must reach the model turned, not as stored."""
    root = square_dataset(tmp_path, n=6)
    rows = list(csv.DictReader(open(root / "labels.csv")))
    for row in rows:
        png = root / "images" / row["file"]
        row["file"] = png.with_suffix(".jpg").name
        write_exif_rotated(png.with_suffix(".jpg"), Image.open(png))
        png.unlink()
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dls, _ = stamp_dataloaders(root, size=64, bs=4, workers=0, device=torch.device("cpu"), augment=False)
    xb, boxes, _ = dls.train.one_batch()
    xb, boxes = plain(xb), plain(boxes)
    for b in range(len(xb)):
        ys, xs = torch.nonzero(xb[b].mean(0) > 1.0, as_tuple=True)
        pix = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert ((boxes[b, 0] + 1) / 2 * 64 - pix).abs().max() <= 3.0


def test_crop_windows_hold_the_stamp_whole_and_valid_sees_the_whole_image(tmp_path):
    torch.manual_seed(0)
    dls, _ = stamp_dataloaders(square_dataset(tmp_path, n=12), size=96, bs=8, workers=0, device=torch.device("cpu"),
                               augment=False, crop=48)
    xb, boxes, _ = dls.train.one_batch()
    xb, boxes = plain(xb), plain(boxes)
    assert xb.shape[-2:] == (48, 48)
    for b in range(len(xb)):
        ys, xs = torch.nonzero(xb[b].mean(0) > 1.0, as_tuple=True)
        pix = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        # the 40x30 square, squished to 30x30 at 96 px (its bilinear edges may read a pixel less), whole
        assert all(28 <= side <= 31 for side in (pix[2:] - pix[:2]).tolist()), (b, pix)
        assert ((boxes[b, 0] + 1) / 2 * 48 - pix).abs().max() <= 1.0, (b, boxes[b, 0], pix)
    xv, _, _ = dls.valid.one_batch()
    assert xv.shape[-2:] == (96, 96)


def test_crop_window_ranges():
    first, last = _window_range(30, 50, 48, 96)  # windows whose left edge is 2..30 hold 30..50 whole
    assert (first, last) == (2, 30) and not _cut((30, 0, 50, 10), (first, 0), 48) and not _cut((30, 0, 50, 10), (last, 0), 48)
    assert _cut((30, 0, 50, 10), (31, 0), 48) and not _cut((30, 0, 50, 10), (60, 0), 48)  # cut; wholly outside
    assert _window_range(10, 80, 48, 96) == (21, 21)  # larger than the window: centred on it


def test_assignment_gives_every_stamp_a_cell_and_padding_none():
    boxes = torch.tensor([[[-0.9, -0.9, -0.85, -0.85], [0.0, 0.0, 0.8, 0.8]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 1], [0, 0]])
    cls_t, box_t, pos = assign(boxes, labels, 8, 8, 1)
    assert pos[0].sum() >= 2 and pos[1].sum() == 0
    # The tiny box is smaller than a cell, yet the cell holding its centre (the first) owns it.
    assert pos[0, 0] and torch.allclose(box_t[0, 0], boxes[0, 0])
    assert cls_t[0][pos[0]].sum() == pos[0].sum() and cls_t[1].sum() == 0


def test_score_loss_is_bce_per_owning_cell_unless_focal_is_asked_for():
    torch.manual_seed(0)
    out = torch.randn(2, 5, 4, 4)
    boxes = torch.tensor([[[-0.5, -0.5, 0.3, 0.2]], [[0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1], [0]])
    cls_t, _, pos = assign(boxes, labels, 4, 4, 1)
    logits = out[:, :1].flatten(2).transpose(1, 2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, cls_t, reduction="sum") / pos.sum()
    scores_only = StampLoss(1, l1_weight=0, giou_weight=0)
    assert torch.allclose(scores_only(out, boxes, labels), bce)
    p = logits.sigmoid()
    pt = torch.where(cls_t > 0, p, 1 - p)
    focal = (-(pt.log()) * (1 - pt) ** 2 * torch.where(cls_t > 0, 0.25, 0.75)).sum() / pos.sum()
    assert torch.allclose(StampLoss(1, l1_weight=0, giou_weight=0, gamma=2, alpha=0.25)(out, boxes, labels), focal)
    assert StampLoss(1)(out, boxes, labels) > bce  # the box terms add to it


@pytest.fixture(scope="module")
def easy_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("easy")
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=96, looks=EASY), out)
    return out


@pytest.mark.slow
def test_training_runs_and_loss_goes_down(easy_dataset, tmp_path):
    logs = []
    metrics = train(easy_dataset, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=64, epochs=4, bs=8, pretrained=True,
                                                        workers=0), log=logs.append)
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]
    assert any("from scratch" in line for line in logs)  # no weights offline: a warning, not a crash
    for name in ("model.pkl", "model.pth", "config.json", "metrics.json", "curves.png", "samples.png"):
        assert (tmp_path / name).stat().st_size > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["classes"] == ["qc-passed"] and 0 < config["threshold"] < 1
    assert set(metrics["final"]) >= {"accuracy", "precision", "recall", "mean_iou", "iou50"}
    # every epoch is judged at the threshold its own valid results prefer, and says which
    assert all(0.05 <= e["threshold"] <= 0.95 for e in metrics["epochs"]), metrics["epochs"]


def test_export_reload_predict_same_numbers(easy_dataset, tmp_path):
    from fastai.learner import load_learner

    train(easy_dataset, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=64, epochs=1, bs=8, pretrained=False, workers=0))
    learn = load_learner(tmp_path / "model.pkl")
    p1, p2 = Predictor(tmp_path, "cpu"), Predictor(tmp_path, "cpu")
    img = Image.open(next((easy_dataset / "images").iterdir())).convert("RGB")
    x = p1.to_input(img)[None]
    (s1, b1), (s2, b2) = p1.run(x.numpy()), p2.run(x.numpy())
    assert np.array_equal(s1, s2) and np.array_equal(b1, b2)
    learn.model.eval()
    with torch.no_grad():
        xin = (x.float() - p1.mean) / p1.std
        assert torch.allclose(learn.model(xin), p1.model(xin), atol=1e-5)


@pytest.mark.slow
def test_crop_training_predicts_on_the_whole_image(easy_dataset, tmp_path):
    logs = []
    metrics = train(easy_dataset, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=96, crop=64, epochs=1, bs=8,
                                                        pretrained=False, workers=0), log=logs.append)
    assert any("64 px windows of the 96 px image" in line for line in logs)
    # it predicts at the view its valid split preferred, the training size or a little larger
    assert [v["size"] for v in metrics["views"]] == view_sizes(96) == [96, 112, 128]
    assert Predictor(tmp_path, "cpu").size in view_sizes(96) and metrics["final"]["images"] > 0
    # the exported learner predicts on a photo: the window is a training transform only
    from fastai.learner import load_learner
    learn = load_learner(tmp_path / "model.pkl")
    photo_file = next((easy_dataset / "images").iterdir())
    (boxes, labels), _, raw = learn.predict(photo_file)
    size = json.loads((tmp_path / "config.json").read_text())["size"]
    assert boxes.shape[-1] == 4 and raw.shape[-1] == size // 16  # the whole image at its size, not a window
    assert learn.get_preds(dl=learn.dls.test_dl([photo_file] * 3))[0].shape[0] == 3
    r = subprocess.run([sys.executable, "-m", "stampcheck", "train", "--no-verifier", str(easy_dataset), "--size", "96", "--crop", "96",
                        "--out", str(tmp_path / "m")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and "must be smaller than --size" in r.stdout + r.stderr


@pytest.mark.slow
def test_the_size_a_model_predicts_at_is_the_best_valid_view_and_evaluate_agrees(easy_dataset, tmp_path):
    from stampcheck.qa.evaluate import evaluate

    logs = []
    metrics = train(easy_dataset, tmp_path, TrainConfig(verifier=False, arch="resnet18", size=64, epochs=2, bs=8, pretrained="base",
                                                        workers=0), log=logs.append)
    config = json.loads((tmp_path / "config.json").read_text())
    views = metrics["views"]
    assert [v["size"] for v in views] == view_sizes(64) == [64, 80] and config["train"]["size"] == 64
    # each view was really scored at its size: 80 px photos make a 5 x 5 grid
    assert Predictor(tmp_path, "cpu", size=80).run(np.zeros((1, 3, 80, 80), np.uint8))[0].shape[1] == 25
    chosen = pick_view(views, "correct")
    assert config["size"] == chosen["size"] and views[0]["images"] == sum(i.split == "valid" for i in read_labels(easy_dataset))
    assert config["threshold"] == chosen["threshold"] and config["valid"]["accuracy"] == chosen["accuracy"]
    assert any(f"the model predicts at {config['size']} px, threshold" in line for line in logs), logs
    # qa's own reading of the valid photos at that size and threshold gives the same figures
    report = evaluate(tmp_path, easy_dataset, split="valid")["metrics"]  # no progress given: none shown
    assert (report["accuracy"], report["threshold"]) == (chosen["accuracy"], chosen["threshold"])
    assert report["mean_iou"] == pytest.approx(chosen["mean_iou"], abs=1e-6)


def test_pick_view_takes_the_strictest_threshold_among_sizes_valid_cannot_tell_apart():
    def view(size, correct, threshold, images=1000):
        return {"size": size, "correct": correct, "threshold": threshold, "images": images}

    se = (0.9 * 0.1 / 1000) ** 0.5  # about 0.0095
    # a size within one standard error of the best, with a stricter threshold, beats the best figure
    assert pick_view([view(256, 0.85, 0.9), view(288, 0.9 - se / 2, 0.8), view(320, 0.9, 0.7)], "correct")["size"] == 288
    # one further below is not among the candidates, however strict
    assert pick_view([view(256, 0.9 - 2 * se, 0.99), view(320, 0.9, 0.7)], "correct")["size"] == 320
    # equal thresholds: the smaller, cheaper size; and ties in the figure count as near
    assert pick_view([view(256, 0.9, 0.8), view(288, 0.9, 0.8), view(320, 0.9, 0.8)], "correct")["size"] == 256
    assert pick_view([view(32, 0.5, 0.5)], "correct")["size"] == 32
    nan = float("nan")  # no readable valid image: nothing to compare, the training size stays
    assert pick_view([view(256, nan, 0.5, 0), view(320, nan, 0.5, 0)], "correct")["size"] == 256


def test_cpu_defaults_see_small_stamps_at_full_size_and_train_on_windows(easy_dataset, tmp_path):
    learn, dls, *_ = build_learner(easy_dataset, tmp_path / "a", cfg := TrainConfig(device="cpu", workers=0, bs=4),
                                   log=lambda *a: None)
    xb, *_ = dls.one_batch()
    assert (cfg.size, cfg.crop) == (CPU_SIZE, CPU_CROP) and xb.shape[-1] == CPU_CROP < CPU_SIZE
    assert dls.valid.one_batch()[0].shape[-1] == CPU_SIZE  # valid (and qa) see the whole image
    _, dls, *_ = build_learner(easy_dataset, tmp_path / "b", cfg := TrainConfig(device="cpu", workers=0, bs=4, crop=0),
                               log=lambda *a: None)
    assert cfg.crop is None and dls.one_batch()[0].shape[-1] == CPU_SIZE
    _, dls, *_ = build_learner(easy_dataset, tmp_path / "c", cfg := TrainConfig(device="cpu", workers=0, bs=4, size=96),
                               log=lambda *a: None)
    assert cfg.crop is None and dls.one_batch()[0].shape[-1] == 96  # a chosen --size is trained whole


@pytest.mark.slow
def test_init_from_an_earlier_model_goes_on_from_its_weights(easy_dataset, tmp_path):
    cfg = dict(arch="resnet18", size=64, bs=8, pretrained=False, workers=0)
    train(easy_dataset, tmp_path / "a", TrainConfig(verifier=False, epochs=1, **cfg))
    before = torch.load(tmp_path / "a" / "model.pth", weights_only=True)
    learn, *_ = build_learner(easy_dataset, tmp_path / "b", TrainConfig(init=str(tmp_path / "a"), **cfg),
                              log=lambda *a: None)
    after = learn.model.state_dict()
    assert all(torch.equal(before[k], after[k].cpu()) for k in before)
    metrics = train(easy_dataset, tmp_path / "b", TrainConfig(verifier=False, epochs=1, init=str(tmp_path / "a"), **cfg))
    assert metrics["epochs"] and str(tmp_path / "a") in json.loads((tmp_path / "b" / "config.json").read_text())["weights_source"]
    # a model trained from the first shipped base carries inf running variances (fp16 overflow):
    # going on from it re-measures them rather than keep those channels silent for good
    before["smooth.0.1.running_var"][:5] = float("inf")
    torch.save(before, tmp_path / "a" / "model.pth")
    learn, *_ = build_learner(easy_dataset, tmp_path / "b", TrainConfig(init=str(tmp_path / "a"), **cfg),
                              log=lambda *a: None)
    assert torch.isfinite(learn.model.smooth[0][1].running_var).all()
    assert torch.equal(learn.model.stem[0].weight.cpu(), before["stem.0.weight"])  # weights kept
    with pytest.raises(ValueError, match="resnet18"):
        build_learner(easy_dataset, tmp_path / "c", TrainConfig(**{**cfg, "arch": "resnet34"}, init=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="not a stampcheck model"):
        build_learner(easy_dataset, tmp_path / "c", TrainConfig(init=str(tmp_path / "nothing"), **cfg))


@pytest.mark.parametrize("mixed", [True, False])
def test_mixed_precision_autocasts_the_forward_pass_where_the_cpu_has_bf16(easy_dataset, tmp_path, mixed):
    if mixed and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16; training stays in fp32 there")
    learn, *_ = build_learner(easy_dataset, tmp_path, TrainConfig(arch="resnet18", size=64, bs=8, pretrained=False,
                                                                  workers=0, mixed_precision=mixed),
                              log=lambda *a: None)
    seen = set()
    learn.model.stem[0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    learn.fit(1, 1e-3)
    assert seen == ({torch.bfloat16} if mixed else {torch.float32})
    assert np.isfinite(learn.recorder.values[-1][0])
    assert learn.model.stem[0].weight.dtype == torch.float32  # master weights stay fp32


@pytest.mark.slow
def test_overfits_16_images(tmp_path):
    src = tmp_path / "ds"
    compose_dataset(ComposeConfig(count=16, seed=3, max_size=96, looks=Looks(**{**EASY.to_dict(), "negative_share": 0.0})), src)
    rows = list(csv.DictReader(open(src / "labels.csv")))
    out = []
    for r in rows:  # the same 16 images as train and (copied) as valid
        out.append({**r, "split": "train"})
        out.append({**r, "split": "valid", "file": "v" + r["file"], "background": "v" + r["background"]})
        shutil.copy(src / "images" / r["file"], src / "images" / ("v" + r["file"]))
    with open(src / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(out)
    m = train(src, tmp_path / "m", TrainConfig(verifier=False, arch="resnet18", size=96, epochs=60, bs=8, lr=2e-3, pretrained=False,
                                               augment=False, workers=0))
    assert m["final"]["mean_iou"] > 0.8, m["final"]


@pytest.mark.slow
def test_bad_dataset_names_the_bad_rows(easy_dataset, tmp_path):
    shutil.copytree(easy_dataset, tmp_path / "d")
    lines = (tmp_path / "d" / "labels.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",train,", ",test,").replace(",valid,", ",test,")
    lines.append("missing.jpg,train,x,1,1,2,3,4,qc-passed")
    (tmp_path / "d" / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        read_labels(tmp_path / "d")
    assert "line 3" in str(e.value) and "missing.jpg" in str(e.value) and "2 bad rows" in str(e.value)
    r = subprocess.run([sys.executable, "-m", "stampcheck", "train", "--no-verifier", str(tmp_path / "d"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "bad rows" in r.stdout + r.stderr


def test_local_weights_file_is_used(tmp_path):
    from torchvision.models import resnet18
    torch.save(resnet18().state_dict(), tmp_path / "w.pth")
    model, source = build_model("resnet18", 1, weights=tmp_path / "w.pth")
    assert str(tmp_path / "w.pth") in source
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg16", 1)


@pytest.mark.slow
def test_interrupt_keeps_the_best_model(easy_dataset, tmp_path):
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "train", "--no-verifier", str(easy_dataset), "--out", str(out),
                             "--arch", "resnet18", "--size", "64", "--bs", "8", "--epochs", "200",
                             "--no-pretrained", "--workers", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "model.pth").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert "interrupted" in output
    assert proc.returncode == 130, output[-3000:]  # the files of a finished run, but not a finished run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and len(metrics["epochs"]) < 200
    Predictor(out, "cpu")  # the kept model loads


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_distributed_run(easy_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "stampcheck", "train", "--no-verifier", str(easy_dataset), "--out", str(tmp_path / "m"),
                        "--arch", "resnet18", "--size", "64", "--bs", "4", "--epochs", "2", "--no-pretrained",
                        "--workers", "0", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "m" / "model.pkl").exists()
    assert len(json.loads((tmp_path / "m" / "metrics.json").read_text())["epochs"]) == 2


@pytest.mark.slow
def test_lr_find_and_early_stopping_from_the_cli(easy_dataset, tmp_path):
    # a relative --out, as users type it (fastai joins its own path with relative names)
    r = subprocess.run([sys.executable, "-m", "stampcheck", "train", "--no-verifier", str(easy_dataset), "--out", "model",
                        "--arch", "resnet18", "--size", "64", "--bs", "8", "--epochs", "30", "--patience", "1",
                        "--lr-find", "--no-pretrained", "--workers", "0"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    tmp_path = tmp_path / "model"
    assert (tmp_path / "model.pkl").exists()
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    assert "lr_find suggests" in r.stdout
    # piped: one line per epoch, no redrawn bar, no raw lists
    assert "epoch 1/30  train_loss" in r.stdout and "\r" not in r.stdout and "[0, " not in r.stdout
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) < 30  # stopped early


def test_valid_sample_keeps_every_train_item_and_the_same_valid_ones():
    items = [ImageLabels(f"{k:04d}.jpg", "valid" if k % 3 else "train", "bg") for k in range(300)]
    kept = valid_sample(items, 50)
    valid = [i.file for i in kept if i.split == "valid"]
    assert len(valid) == 50 and [i for i in kept if i.split == "train"] == [i for i in items if i.split == "train"]
    assert valid_sample(list(reversed(items)), 50) and \
        sorted(i.file for i in valid_sample(list(reversed(items)), 50) if i.split == "valid") == sorted(valid)
    assert valid_sample(items, 0) == items and valid_sample(items, 1000) == items


def test_a_log_off_a_terminal_hears_from_training_within_an_epoch(tmp_path):
    """A redirected log gets a line every so often within an epoch, not only at its end."""
    root = square_dataset(tmp_path, n=12)
    cfg = TrainConfig(size=64, crop=0, bs=4, workers=0, pretrained="none", verifier=False, epochs=1)
    learn = build_learner(root, tmp_path / "m", cfg, log=lambda *a: None)[0]
    lines = []
    with learn.no_bar():
        learn.fit(1, 1e-3, cbs=[EpochLog(lines.append, every=0.0)])
    assert any(line.startswith("  epoch 1/1: batch 2/") for line in lines), lines
    assert lines[-1].startswith("epoch 1/1  train_loss"), lines
