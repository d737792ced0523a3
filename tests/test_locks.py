"""One writer per folder: every command that writes a folder holds a lock on its
`.stampcheck` from its first change there to its end. Real processes: a first run is caught once it
has begun writing and frozen there (SIGSTOP), a second one into the same folder must end with exit 2
and one line naming the first one's pid, and change nothing; the first then finishes as if alone.
Also: the lock is dropped by kill -9, works without fcntl (Windows), and preview replaces only its
own."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck import errors
from stampcheck.paths import MARKER
from tests.conftest import photo
from tests.test_train import square_dataset

ROOT = Path(__file__).resolve().parents[1]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stampcheck", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], cwd=ROOT, text=True,
                       capture_output=True, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def frozen_writing(proc: subprocess.Popen, folder: Path, written: str, timeout: float = 120) -> None:
    """Wait until ``proc`` has written a file matching the glob ``written`` in ``folder`` (it has
    begun changing it, so it holds the lock), then stop it there."""
    end = time.monotonic() + timeout
    while not any(folder.glob(written)):
        assert proc.poll() is None, f"ended before it was seen writing {folder}: {proc.communicate()[0]}"
        assert time.monotonic() < end, f"never wrote {written} in {folder}"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)
    # stopped once the system call in hand (a write of megabytes) has returned
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.005)


def holding(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    """Wait until ``proc`` holds the lock on ``folder``: its marker names its pid."""
    end = time.monotonic() + timeout
    while f"pid {proc.pid}\n" not in ((folder / MARKER).read_text() if (folder / MARKER).is_file() else ""):
        assert proc.poll() is None, f"ended before it was seen holding {folder}: {proc.communicate()[0]}"
        assert time.monotonic() < end, f"never held {folder}"
        time.sleep(0.005)


def finished(proc: subprocess.Popen) -> str:
    """``proc`` let go on and waited for; its output. Exit 0 asserted."""
    os.kill(proc.pid, signal.SIGCONT)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    return output


def state(folder: Path) -> dict:
    """Every entry under ``folder``, hidden ones included: the hash of a file's bytes, a link's
    target, or what else it is."""
    def what(p: Path) -> str:
        if p.is_symlink():
            return f"link to {os.readlink(p)}"
        if p.is_dir() or p.is_fifo():
            return "dir" if p.is_dir() else "pipe"
        return hashlib.sha256(p.read_bytes()).hexdigest()
    return {str(p.relative_to(folder)): what(p) for p in sorted(folder.rglob("*"))}


def refused_for(r, holder: subprocess.Popen, folder: Path) -> None:
    """Exit 2, one line only, naming the run that holds ``folder`` by its pid."""
    assert r.returncode == errors.USAGE, r.output[-3000:]
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output[-3000:]
    assert f"another stampcheck run (pid {holder.pid}) is writing to" in lines[0] and folder.name in lines[0], lines


@pytest.fixture
def cleanup():
    """Processes a test started are ended, even when it fails while they are stopped."""
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.slow
def test_a_second_compose_into_one_folder_is_refused_and_a_killed_one_lets_go(tmp_path, cleanup):
    ds = tmp_path / "ds"
    args = ["--count", 60, "--max-size", 64, "--workers", 1, "--out", ds]
    first = start("compose", "--seed", 1, *args)
    cleanup.append(first)
    frozen_writing(first, ds, "images/*.jpg")
    before = state(ds)
    refused_for(run("compose", "--seed", 2, "--overwrite", *args), first, ds)
    assert state(ds) == before
    finished(first)
    # the first dataset as it would be alone: same seed, same bytes
    alone = tmp_path / "alone"
    compose_dataset(ComposeConfig(count=60, seed=1, max_size=64), alone)
    assert json.loads((ds / "dataset.json").read_text())["seed"] == 1
    assert (ds / "labels.csv").read_bytes() == (alone / "labels.csv").read_bytes()
    for f in (alone / "images").iterdir():
        assert (ds / "images" / f.name).read_bytes() == f.read_bytes()
    assert (ds / "preview.png").is_file()  # written under the same lock

    killed = start("compose", "--seed", 2, "--overwrite", *args)
    cleanup.append(killed)
    holding(killed, ds)
    killed.kill()  # kill -9: the system drops its lock
    killed.communicate()
    r = run("compose", "--seed", 2, "--overwrite", *args)
    assert r.returncode == 0, r.output[-3000:]
    assert json.loads((ds / "dataset.json").read_text())["seed"] == 2


def test_a_dataset_folder_holding_only_the_marker_is_composed_into(tmp_path):
    """What a compose killed right after taking its lock leaves is no folder of someone else's."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / MARKER).write_text("compose\npid 1\n")
    compose_dataset(ComposeConfig(count=4, seed=1, max_size=64), ds)
    assert json.loads((ds / "dataset.json").read_text())["images"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["a file of someone else's", "a link", "a named pipe"])
def test_a_marker_stampcheck_did_not_write_is_never_written_through(tmp_path, kind):
    photos, out, elsewhere = tmp_path / "photos", tmp_path / "out", tmp_path / "settings.txt"
    photos.mkdir()
    photo(1).save(photos / "a.jpg", quality=90)
    out.mkdir()
    elsewhere.write_text("theme=dark\n")
    if kind == "a link":
        (out / MARKER).symlink_to(elsewhere)
    elif kind == "a named pipe":
        os.mkfifo(out / MARKER)
    else:
        (out / MARKER).write_text("theme=dark\n")
    before = state(tmp_path)
    r = run("crawl", "--from-dir", photos, "--out", out, "--min-size", 64, timeout=60)
    assert r.returncode == errors.USAGE and r.output.startswith("error:"), r.output
    assert len(r.output.strip().splitlines()) == 1 and MARKER in r.output, r.output
    assert state(tmp_path) == before


@pytest.mark.slow
def test_a_second_crawl_into_one_folder_is_refused(tmp_path, cleanup):
    first_photos, second_photos, out = tmp_path / "a", tmp_path / "b", tmp_path / "bg"
    for folder, seed in ((first_photos, 100), (second_photos, 200)):
        folder.mkdir()
        for i in range(40):
            photo(seed + i).save(folder / f"{i}.jpg", quality=90)
    first = start("crawl", "--from-dir", first_photos, "--out", out, "--min-size", 64)
    cleanup.append(first)
    frozen_writing(first, out, "images/*.jpg")
    before = state(out)
    refused_for(run("crawl", "--from-dir", second_photos, "--out", out, "--min-size", 64), first, out)
    assert state(out) == before
    finished(first)
    kept = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(kept) == len(list((out / "images").iterdir())) > 30  # each file once: no run counted another's
    assert all(k["url"].startswith(first_photos.resolve().as_uri() + "/") for k in kept)


@pytest.mark.slow
def test_a_second_export_into_one_folder_is_refused(tmp_path, cleanup):
    from tests.test_hostile_inputs import model_folder

    model = model_folder(tmp_path / "model", ["qc-passed"])
    first = start("export", model)
    cleanup.append(first)
    frozen_writing(first, model, ".model.onnx.*.part")  # written, and being checked by onnxruntime
    before = state(model)
    refused_for(run("export", model, "--format", "torchscript"), first, model)
    assert state(model) == before
    finished(first)
    assert (model / "model.onnx").is_file() and not (model / "model.torchscript").exists()


@pytest.mark.slow
def test_a_second_train_into_one_folder_is_refused_and_so_is_an_export_there(tmp_path, cleanup):
    first_ds, second_ds = square_dataset(tmp_path / "a", n=8), square_dataset(tmp_path / "b", n=8)
    model = tmp_path / "model"
    args = ["--out", model, "--epochs", 2, "--size", 64, "--bs", 4, "--workers", 0, "--no-pretrained", "--no-verifier",
            "--no-verifier", "--no-mixed-precision"]
    first = start("train", first_ds, *args)
    cleanup.append(first)
    frozen_writing(first, model, "model.pth")  # its first epoch is written
    before = state(model)
    refused_for(run("train", second_ds, *args, "--overwrite"), first, model)
    refused_for(run("export", model), first, model)  # a model half trained is no model to export
    assert state(model) == before
    finished(first)
    config = json.loads((model / "config.json").read_text())
    assert config["dataset"] == str(first_ds.resolve()) and config["best_epoch"] >= 0
    assert (model / "metrics.json").is_file() and not (model / "model.onnx").exists()


@pytest.mark.slow
def test_a_pretraining_run_is_not_resumed_while_it_runs(tmp_path, cleanup):
    out = tmp_path / "run"
    args = ["--out", out, "--size", 64, "--epochs", 2, "--epoch-images", 16, "--valid-images", 8, "--bs", 8,
            "--workers", 0]
    first = start("pretrain", *args)
    cleanup.append(first)
    frozen_writing(first, out, "state.json")  # its first epoch is written
    before = state(out)
    refused_for(run("pretrain", *args, "--resume"), first, out)
    assert state(out) == before
    finished(first)
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 2 and (out / "card.md").is_file()


def test_a_run_lets_go_of_its_folder_even_while_a_forked_worker_lives_on(tmp_path):
    """train's data-loader workers are forked and share the locked file: the run's end lets go of
    the folder all the same, for the next run of the same program (the Python API)."""
    from stampcheck.paths import lock_output, refuse_held

    hold = lock_output(tmp_path / "model", "train")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[hold.fd])
    try:
        hold.close()
        refuse_held(tmp_path / "model")  # no OverlapError: nobody holds it
        with lock_output(tmp_path / "model", "train"):
            pass
    finally:
        worker.kill()
        worker.wait()


def test_the_lock_needs_no_fcntl(tmp_path):
    """Windows has no fcntl: the runtime install's modules import without it, and the checks that
    only look (a folder nobody holds) work."""
    code = f"""
import sys
sys.modules["fcntl"] = None  # import fcntl fails, as on Windows
from pathlib import Path
import stampcheck.paths, stampcheck.atomic, stampcheck.engine.onnx, stampcheck.app.api
import stampcheck.qa.batch, stampcheck.engine, stampcheck.qa.report, stampcheck.qa.watch
from stampcheck.paths import check_output
from stampcheck.atomic import remove_own_partials
out = Path({str(tmp_path / "report")!r})
check_output(out, "qa")
out.mkdir()
(out / ".stampcheck").write_text("qa\\n")
print("imported", remove_own_partials(out, "results\\\\.csv"))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "imported []", r.stdout + r.stderr


@pytest.mark.slow
def test_preview_replaces_only_a_preview_stampcheck_wrote(tmp_path):
    ds = square_dataset(tmp_path / "hand", n=4)
    own = ds / "preview.png"
    Image.new("RGB", (40, 30), "red").save(own)  # the hand-labelled set's own picture
    before = own.read_bytes()
    r = run("preview", ds)
    assert r.returncode == errors.USAGE and r.output.startswith("error:"), r.output
    assert "--out" in r.output and str(own) in r.output.replace("\n", "")
    assert own.read_bytes() == before
    own.unlink()
    for _ in range(2):  # written, then its own preview replaced
        r = run("preview", ds)
        assert r.returncode == 0, r.output
    assert Image.open(own).size[0] == 4 * 256
    elsewhere = tmp_path / "grid.png"
    for _ in range(2):
        assert run("preview", ds, "--out", elsewhere).returncode == 0
    composed = tmp_path / "composed"
    compose_dataset(ComposeConfig(count=4, seed=1, max_size=64), composed)
    Image.new("RGB", (40, 30), "red").save(composed / "preview.png")  # compose's file, whatever wrote it
    assert run("preview", composed).returncode == 0
    assert Image.open(composed / "preview.png").size[0] == 4 * 256
