"""train and pretrain as an attacker and a careless user find them: no code runs from a
checkpoint, a refused or interrupted run leaves an earlier model byte for byte as it was, a folder
of someone else's is never written into, and an interrupted run says so with exit 130."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck import errors
from stampcheck.paths import MARKER
from tests.test_hostile_inputs import cli, files, refused
from tests.test_train import EASY
from stampcheck.train.callbacks import save_weights
from stampcheck.train.learner import TrainConfig, train
from stampcheck.train.model import build_model
from stampcheck.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[1]


class WritesAFile:
    """Unpickling it opens (so creates) ``path``: code that a checkpoint runs when loaded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def pretrain_folder(out: Path, checkpoint) -> Path:
    """A pretrain run folder after 1 of 2 epochs, as pretrain marks and fills it, with ``checkpoint``."""
    out.mkdir(parents=True)
    (out / MARKER).write_text("pretrain\n")
    cfg = PretrainConfig(size=64, epochs=2, epoch_images=16, valid_images=8, bs=8, workers=0)
    row = {"epoch": 1, "correct": 0.5, "threshold": 0.5}
    (out / "state.json").write_text(json.dumps({"config": asdict(cfg), "epochs_done": 1, "best": 0.5, "best_epoch": 1,
                                                "best_metrics": row, "seconds": 1.0, "history": [row]}))
    torch.save(checkpoint, out / "checkpoint.pth")
    return out


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    ran = tmp_path / "code-ran"
    model, _ = build_model("resnet18", 1, pretrained="none")
    out = pretrain_folder(tmp_path / "run", {"model": model.state_dict(), "opt": WritesAFile(ran)})
    before = files(out)
    line = refused(cli("pretrain", "--out", out, "--resume"), "checkpoint.pth", "could run code")
    assert str(out / "checkpoint.pth") in line and not ran.exists(), "loading the checkpoint ran its code"
    assert files(out) == before
    with pytest.raises(ValueError, match="could run code"):  # a lengthening rewrites state.json only once it may
        pretrain(out, PretrainConfig(), resume=True, epochs_changed=3, log=lambda *a: None)
    assert files(out) == before and not ran.exists()
    # plain values, but not a checkpoint of this network; not a checkpoint at all: one line each
    torch.save({"model": {"w": torch.zeros(2)}, "opt": {"state": [], "hypers": []}}, out / "checkpoint.pth")
    with pytest.raises(ValueError, match="does not fit the run's network"):
        pretrain(out, PretrainConfig(), resume=True, log=lambda *a: None)
    for junk in (b"PK\x03\x04 cut short", b"not a checkpoint"):
        (out / "checkpoint.pth").write_bytes(junk)
        with pytest.raises(ValueError, match="checkpoint.pth cannot be read as a checkpoint"):
            pretrain(out, PretrainConfig(), resume=True, log=lambda *a: None)


@pytest.mark.parametrize("setting, value", [("size", 999999), ("lr", float("nan")), ("epochs", -5), ("bs", 0),
                                            ("size", 128.5), ("epoch_images", True), ("lr", "0.1")])
@pytest.mark.slow
def test_resume_refuses_settings_a_state_json_was_edited_to(tmp_path, setting, value):
    """--resume takes the run's settings from state.json, held to the limits the command line has:
    a size that takes the machine's memory, a NaN rate that trains NaN and exits 0, are exit 2."""
    model, _ = build_model("resnet18", 1, pretrained="none")
    out = pretrain_folder(tmp_path / "run", {"model": model.state_dict(), "opt": {"state": [], "hypers": []}})
    state = json.loads((out / "state.json").read_text())
    state["config"][setting] = value
    (out / "state.json").write_text(json.dumps(state))
    before = files(out)
    refused(cli("pretrain", "--out", out, "--resume"), "state.json", setting)
    assert files(out) == before


@pytest.mark.slow
def test_pretrain_writes_only_into_a_folder_of_its_own(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("card.md", "base.pth", "checkpoint.pth"):  # the user's own files, by chance of these names
        (mine / name).write_text(f"my {name}")
    before = files(mine)
    refused(cli("pretrain", "--out", mine, "--size", 64, "--epochs", 1, "--workers", 0), "did not write")
    cfg = PretrainConfig(size=64, epochs=1, epoch_images=16, valid_images=8, bs=8, workers=0)
    with pytest.raises(ValueError, match="did not write"):
        pretrain(mine, cfg, resume=True, log=lambda *a: None)
    assert files(mine) == before and not (mine / MARKER).exists()
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "link")
    for out, why in ((tmp_path / "file", "not a folder"), (tmp_path / "link", "link")):
        with pytest.raises(ValueError, match=why):
            pretrain(out, cfg, log=lambda *a: None)
    assert files(mine) == before and not any((tmp_path / "empty").iterdir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    ds = tmp_path_factory.mktemp("trust") / "ds"
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=96, looks=EASY), ds)
    return ds


@pytest.fixture(scope="module")
def long_epoch(tmp_path_factory) -> Path:
    """Enough images that a first epoch at FIRST_EPOCH's settings lasts many seconds, also on a fast
    machine: a signal sent half a second into it comes before it ends."""
    ds = tmp_path_factory.mktemp("trust") / "long"
    compose_dataset(ComposeConfig(count=160, seed=3, max_size=96, looks=EASY), ds)
    return ds


def earlier_model(out: Path) -> dict:
    """A model folder as an earlier `train` left it; the hash of each file."""
    model, _ = build_model("resnet18", 1, pretrained="none")
    save_weights(model, out, {"arch": "resnet18", "size": 64, "classes": ["qc-passed"], "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225], "threshold": 0.5, "train": {}})
    for name in ("model.pkl", "metrics.json", "curves.png", "lr_find.png"):
        (out / name).write_bytes(f"the earlier run's {name}".encode())
    (out / "notes.txt").write_text("the user's")
    return files(out)


@pytest.mark.slow
def test_a_refused_training_leaves_the_earlier_model_as_it_was(dataset, tmp_path):
    keep = tmp_path / "keep"
    before = earlier_model(keep)
    refused(cli("train", dataset, "--out", keep, "--overwrite", "--size", 64, "--minutes", 0.1), "--minutes")
    assert files(keep) == before
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    cfg = dict(arch="resnet18", size=64, bs=8, workers=0, verifier=False)
    for extra in ({"minutes": 0.1, "lr_find": True}, {"weights": str(tmp_path / "junk.pth")},
                  {"init": str(tmp_path / "nothing")}):
        with pytest.raises(ValueError):
            train(dataset, keep, TrainConfig(**cfg, **extra), overwrite=True, log=lambda *a: None)
        assert files(keep) == before, extra
    with pytest.raises(ValueError, match="--minutes"):
        train(dataset, tmp_path / "new", TrainConfig(**cfg, minutes=0.1), log=lambda *a: None)
    assert not (tmp_path / "new").exists()


def start_training(*args) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, []


def wait_for(proc: subprocess.Popen, lines: list[str], words: str, timeout: float = 240) -> None:
    """Read ``proc``'s output into ``lines`` until a line holds ``words``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if words in line:
            return
    raise AssertionError(f"never printed {words!r}: {''.join(lines)[-3000:]}")


def finish(proc: subprocess.Popen, lines: list[str]) -> str:
    rest, _ = proc.communicate(timeout=240)
    return "".join(lines) + rest


# the first epoch at 192 px takes many seconds on a CPU: the signal lands inside it
FIRST_EPOCH = ["--size", 192, "--bs", 4, "--epochs", 3, "--no-pretrained", "--workers", 0, "--no-verifier"]


@pytest.mark.parametrize("sig, overwrite, extra", [(signal.SIGINT, False, []), (signal.SIGTERM, True, []),
                                                   (signal.SIGINT, True, ["--lr-find"])])
@pytest.mark.slow
def test_interrupted_in_the_first_epoch_leaves_the_folder_as_it_was(long_epoch, tmp_path, sig, overwrite, extra):
    """Into a new folder: nothing is left. Over an earlier model (--overwrite): it stays, byte for byte,
    also when the signal comes while lr_find runs (its curve cut short, no suggestion)."""
    out = tmp_path / "keep" if overwrite else tmp_path / "new" / "model"
    before = earlier_model(out) if overwrite else {}
    proc, lines = start_training("train", long_epoch, "--out", out, *FIRST_EPOCH,
                                 *(["--overwrite"] if overwrite else []), *extra)
    wait_for(proc, lines, "resnet18 at 192 px")  # the log's last line before training
    time.sleep(0.5)
    proc.send_signal(sig)
    output = finish(proc, lines)
    assert "epoch 1/3" not in output, "the first epoch ended before the signal: the case is not exercised"
    assert proc.returncode == errors.INTERRUPTED, output[-3000:]
    assert output.splitlines()[-1] == "interrupted" and "Error" not in output, output[-3000:]
    if overwrite:
        assert files(out) == before
    else:
        assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_pretrain_interrupted_exits_130_and_keeps_only_finished_epochs(tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--out", out, "--epochs", 50, "--valid-images", 8, "--bs", 8, "--workers", 0]
    proc, lines = start_training(*args, "--size", 128, "--epoch-images", 96)  # a first epoch of many seconds
    wait_for(proc, lines, "pretraining resnet18")
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    output = finish(proc, lines)
    assert "epoch 1/50" not in output, "the first epoch ended before the signal: the case is not exercised"
    assert proc.returncode == errors.INTERRUPTED and output.splitlines()[-1] == "interrupted", output[-3000:]
    assert not out.exists()  # it made the folder, and nothing of it was worth keeping
    proc, lines = start_training(*args, "--size", 64, "--epoch-images", 16)
    wait_for(proc, lines, "epoch 1/50")
    proc.send_signal(signal.SIGINT)
    output = finish(proc, lines)
    assert proc.returncode == errors.INTERRUPTED, output[-3000:]
    assert "--resume continues" in output
    state = json.loads((out / "state.json").read_text())
    assert 1 <= state["epochs_done"] < 50 and (out / "card.md").is_file() and (out / "base.pth").is_file()


@pytest.mark.slow
def test_killed_while_its_first_epoch_is_written_the_earlier_model_stays(dataset, tmp_path):
    """kill -9 (or a full disk) while the new weights are being written: the earlier model is whole,
    its config.json beside its model.pth; its files go only once the new ones are written beside."""
    out = tmp_path / "keep"
    before = earlier_model(out)
    proc, _ = start_training("train", dataset, "--out", out, "--overwrite", "--size", 64, "--crop", 0, "--epochs", 1,
                             "--bs", 8, "--workers", 0, "--no-verifier")
    while proc.poll() is None and not any(p.name.startswith(".model.pth.") for p in out.iterdir()):
        time.sleep(0.001)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before its kill: the case is not exercised"
    visible = {k: v for k, v in files(out).items() if not Path(k).name.startswith(".")}
    assert visible == before


def test_a_model_written_while_the_dataset_loads_is_not_replaced(dataset, tmp_path):
    """Another run's model lands in --out after this run's check and before it holds the folder
    (that run finished while this one loaded a large dataset): without --overwrite it stays."""
    out = tmp_path / "shared"
    before = {}

    def log(line):  # the line train logs once its dataset is loaded, before it takes the folder
        if "starting from" in line and not before:
            out.mkdir()
            (out / MARKER).write_text("train\n")
            before.update(earlier_model(out))

    cfg = TrainConfig(arch="resnet18", size=64, crop=0, epochs=1, bs=8, workers=0, verifier=False)
    with pytest.raises(ValueError, match="already holds a model"):
        train(dataset, out, cfg, log=log)
    assert before and files(out) == before | {str(out / MARKER): files(out)[str(out / MARKER)]}  # the pid it held it by


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_stop_sent_to_the_process_group_is_an_interruption(long_epoch, tmp_path, command):
    """SIGTERM to the whole process group (a service manager's stop, `kill -TERM -PGID`) ends the
    data loader's workers too: still 130 and one line, not their RuntimeError as a failure."""
    out = tmp_path / "keep"
    if command == "train":
        before = earlier_model(out)
        args = ["train", long_epoch, "--out", out, "--overwrite", *FIRST_EPOCH[:-3], "--workers", 1, "--no-verifier"]
        started = "resnet18 at 192 px"
    else:
        before = {}
        args = ["pretrain", "--out", out, "--size", 128, "--epochs", 50, "--epoch-images", 96, "--valid-images", 8,
                "--bs", 8, "--workers", 1]
        started = "pretraining resnet18"
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    wait_for(proc, lines, started)
    time.sleep(0.5)  # its loader worker started, its first epoch (many seconds) not over
    os.killpg(proc.pid, signal.SIGTERM)
    output = finish(proc, lines)
    assert "epoch 1/" not in output, "the first epoch ended before the signal: the case is not exercised"
    assert proc.returncode == errors.INTERRUPTED, output[-3000:]
    assert output.splitlines()[-1] == "interrupted" and "Error" not in output, output[-3000:]
    assert (files(out) == before) if before else not out.exists()


def test_pretrain_leaves_a_run_another_advanced_while_it_read_its_inputs(tmp_path):
    """Another pretrain wrote the folder after this one read its state.json and checkpoint and
    before it held the folder (its backgrounds can take minutes to read): refused, not resumed from
    the older checkpoint over the newer epochs."""
    out = tmp_path / "run"
    cfg = PretrainConfig(size=64, epochs=1, epoch_images=16, valid_images=8, bs=8, workers=0)
    pretrain(out, cfg, log=lambda *a: None)
    before = {}

    def log(line):  # the last line a resumed run logs before it takes the folder
        if line.startswith("resuming ") and "own settings" in line and not before:
            state = json.loads((out / "state.json").read_text())
            (out / "state.json").write_text(json.dumps({**state, "seconds": state["seconds"] + 60}))
            before.update(files(out))

    with pytest.raises(ValueError, match="another pretrain run wrote"):
        pretrain(out, PretrainConfig(), resume=True, epochs_changed=2, log=log)
    assert before and {k: v for k, v in files(out).items() if not k.endswith(MARKER)} == \
        {k: v for k, v in before.items() if not k.endswith(MARKER)}


def test_train_removes_what_a_killed_train_left_half_written(dataset, tmp_path):
    """kill -9 while model.pth was written leaves its hidden temporary file (tens of MB): the next
    run into the folder removes it; a file of the user's by such a name stays."""
    out = tmp_path / "model"
    earlier_model(out)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    left = [out / f".model.pth.{dead}.part", out / f".config.json.{dead}.part"]
    mine = [out / f".notes.txt.{dead}.part", out / f".model.pth.{os.getppid()}.part"]  # not train's; a live process's
    for f in left + mine:
        f.write_bytes(b"half")
    cfg = TrainConfig(arch="resnet18", size=64, crop=0, epochs=1, bs=8, workers=0, verifier=False)
    train(dataset, out, cfg, overwrite=True, log=lambda *a: None)
    assert not any(f.exists() for f in left) and all(f.exists() for f in mine)
