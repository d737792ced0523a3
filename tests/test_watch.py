"""`stampcheck qa MODEL --watch DIR`: the real command in a subprocess, a real tiny model, photos
written as a camera (or a slow network share) writes them."""

import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import photo
from tests.test_qa import ROOT, run_cli, tiny_model  # noqa: F401 - the module-scoped model fixture

LINE = re.compile(r"^(MISSING|STAMPED|UNREADABLE) (\S+?)(?::| score [0-9.]+$)", re.MULTILINE)
GATE = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"  # records the paths it is given


def jpeg(seed: int, size=(640, 480)) -> bytes:
    buf = io.BytesIO()
    photo(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start(model: Path, folder: Path, out: Path, gate_log: Path) -> subprocess.Popen:
    gate = shlex.join([sys.executable, "-c", GATE, str(gate_log)])
    return subprocess.Popen([sys.executable, "-m", "stampcheck", "qa", model, "--watch", folder, "--out", out,
                             "--settle", "2", "--on-missing", gate], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def records(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(out: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while len(records(out)) < n:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < end, f"{len(records(out))} of {n} photos checked: {records(out)}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> str:
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    return output


def rel_names(out: Path, folder: Path) -> list[str]:
    return [str(Path(r["file"]).relative_to(folder)) for r in records(out)]


def page_counts(page: Path, tmp: Path) -> dict[str, int]:
    """The counts the report page shows in a real browser (Chromium's DOM after the page ran)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    return {k: int(v) for k, v in re.findall(r'id="(stamped|missing|unreadable)"[^>]*>\s*<b>(\d+)', dom)}


def csv_counts(out: Path) -> dict[str, int]:
    photos = {}
    for row in csv.DictReader((out / "results.csv").read_text().splitlines()):
        photos[row["file"]] = ("unreadable" if row["status"] == "error" else
                               "stamped" if row["has_stamp"] == "1" else "missing")
    return {k: list(photos.values()).count(k) for k in ("stamped", "missing", "unreadable")}


@pytest.mark.slow
def test_watch_checks_each_photo_once_as_written_and_continues_after_a_restart(tiny_model, tmp_path):  # noqa: F811
    folder, out, gate_log = tmp_path / "camera", tmp_path / "report", tmp_path / "gate.log"
    (folder / "line3" / "cam2").mkdir(parents=True)
    model = tiny_model / "model"
    shots = sorted((tiny_model / "ds" / "images").iterdir())
    (folder / "before-start.jpg").write_bytes(shots[0].read_bytes())  # there before the watch: checked too
    (folder / ".hidden.jpg").write_bytes(shots[1].read_bytes())
    proc = start(model, folder, out, gate_log)
    expected = ["before-start.jpg"]
    wait_for(out, 1, proc)  # the model is loaded: from now on the watch sees every stage of a write

    def write(name: str, data: bytes, pieces: int = 1, pause: float = 0.0) -> None:
        with open(folder / name, "wb") as f:
            for k in range(pieces):
                f.write(data[k * len(data) // pieces:(k + 1) * len(data) // pieces])
                f.flush()
                if k + 1 < pieces:
                    time.sleep(pause)
        expected.append(name)

    for i in range(20):
        name = f"2026112{i % 3}-10{i:02d}00.jpg"
        if i in (3, 11):  # slowly: pieces with pauses longer than a poll
            write(name, jpeg(i), pieces=4, pause=0.3)
        elif i in (6, 14):  # partly written, seen as broken, finished after a pause (still < --settle)
            write(name, jpeg(i), pieces=2, pause=1.0)
        elif i == 9:
            write("line3/cam2/20261121-101502.jpg", jpeg(i))
        elif i == 17:
            write("broken.jpg", jpeg(i)[:2000])  # stays corrupt
        elif i == 19:  # a writer's temporary (hidden) name, renamed when complete: seen once, by its name
            (folder / ".part-19").write_bytes(jpeg(i))
            (folder / ".part-19").rename(folder / name)
            expected.append(name)
        else:
            write(name, shots[i % len(shots)].read_bytes())
        time.sleep(0.05)
    wait_for(out, len(expected), proc)
    output = stop(proc)

    assert sorted(rel_names(out, folder)) == sorted(expected)  # each exactly once, nothing hidden
    printed = LINE.findall(output)
    assert sorted(name for _, name in printed) == sorted(expected), output
    status = {name: kind for kind, name in printed}
    assert status["broken.jpg"] == "UNREADABLE"
    assert [n for n, k in status.items() if k == "UNREADABLE"] == ["broken.jpg"]  # the slow ones were waited for
    failing = sorted(r["file"] for r in records(out) if r["status"] == "error" or not r["has_stamp"])
    assert sorted(gate_log.read_text().splitlines()) == failing  # --on-missing ran once for each of them
    assert (out / "index.html").is_file()
    assert page_counts(out / "index.html", tmp_path) == csv_counts(out)

    # down for a while: photos arrive; the restart checks them and only them
    for i in (20, 21):
        write(f"while-down-{i}.jpg", jpeg(i))
    proc = start(model, folder, out, gate_log)
    wait_for(out, len(expected), proc)
    write("line3/cam2/after-restart.jpg", jpeg(22))
    wait_for(out, len(expected), proc)
    output = stop(proc, signal.SIGTERM)
    assert sorted(rel_names(out, folder)) == sorted(expected)
    assert sorted(name for _, name in LINE.findall(output)) == ["line3/cam2/after-restart.jpg", "while-down-20.jpg",
                                                                "while-down-21.jpg"]
    assert sum(csv_counts(out).values()) == len(expected)
    assert page_counts(out / "index.html", tmp_path) == csv_counts(out)  # the report went on, too


@pytest.mark.slow
def test_watch_refuses_bad_input_in_one_line(tiny_model, tmp_path):  # noqa: F811
    folder = tmp_path / "camera"
    folder.mkdir()
    (tmp_path / "file.jpg").write_bytes(jpeg(1))
    model = tiny_model / "model"
    cases = [(model, tmp_path / "nope", tmp_path / "o1"), (model, tmp_path / "file.jpg", tmp_path / "o2"),
             (model, folder, folder / "report"), (tmp_path / "no-model", folder, tmp_path / "o3")]
    for m, watched, out in cases:
        r = run_cli("qa", m, "--watch", watched, "--out", out)
        output = r.stdout + r.stderr
        assert r.returncode == 2 and output.startswith("error:") and len(output.strip().splitlines()) == 1, output
        assert not out.exists()
    r = run_cli("qa", model, "--watch", folder, "--out", tmp_path / "o4", "--on-missing", "no-such-command-xyz")
    assert r.returncode == 2 and "no-such-command-xyz" in r.stdout + r.stderr
    # a batch report folder is not a watch's, and the other way round: neither overwrites the other
    (folder / "a.jpg").write_bytes(jpeg(2))
    assert run_cli("qa", model, folder, "--out", tmp_path / "batch").returncode in (0, 1)  # stamped or not
    r = run_cli("qa", model, "--watch", folder, "--out", tmp_path / "batch")
    assert r.returncode == 2 and "did not write" in r.stdout + r.stderr


# a reject gate that takes its time: logs its start and end, and fails for names with "bad"
SLOW_GATE = ("import sys, time; log, path = sys.argv[1:]; open(log, 'a').write('start ' + ascii(path) + '\\n'); "
             "time.sleep(1.5); open(log, 'a').write('end ' + ascii(path) + '\\n'); sys.exit(3 if 'bad' in path else 0)")


@pytest.mark.slow
def test_watch_on_a_hostile_folder_checks_each_name_once_and_gates_them_all(tiny_model, tmp_path):  # noqa: F811
    """Names a camera folder can hold on a bad day, a link into the report, and Ctrl-C from the
    terminal (its whole process group) while reject gates are running and queued."""
    folder, out, gate_log = tmp_path / "camera", tmp_path / "report", tmp_path / "gate.log"
    folder.mkdir()
    out.mkdir()  # empty, so that a link can lead into it from the start
    (folder / "latest").symlink_to(out)  # the report's thumbnails and tables are no photos
    (folder / "good.jpg").write_bytes(sorted((tiny_model / "ds" / "images").iterdir())[0].read_bytes())
    broken = [f"junk-{i}.jpg" for i in range(6)] + ["future.jpg", "bad\x1b[2J\nname.jpg", os.fsdecode(b"bad\xff.jpg")]
    for name in broken:
        (folder / name).write_bytes(b"not a photo")
    day = 24 * 3600
    os.utime(folder / "future.jpg", (time.time() + day, time.time() + day))  # a camera's wrong clock
    os.mkfifo(folder / "pipe.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    documents = ["README.md", "notes\x1b[2J.txt"]  # skipped and named (escaped), never rows nor gated
    for name in documents:
        (folder / name).write_text("camera log")
    names = {"good.jpg", "pipe.jpg", "gone.jpg", *broken}
    gate = shlex.join([sys.executable, "-c", SLOW_GATE, str(gate_log)])
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "qa", tiny_model / "model", "--watch", folder,
                             "--out", out, "--settle", "2", "--on-missing", gate], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)  # its own group, as in a terminal
    end = time.monotonic() + 60
    while {Path(r["file"]).name for r in records(out)} < names:
        if proc.poll() is not None or time.monotonic() > end:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    output = proc.communicate(timeout=60)[0].decode(errors="backslashreplace")
    problems = []
    checked = {Path(r["file"]).name: r for r in records(out)}
    if set(checked) != names or len(records(out)) != len(names):
        problems.append(f"each name once: {sorted(checked)} ({len(records(out))} records)")
    if output.count("skipped, not a photo by name or content: ") != len(documents) or "README.md" not in output:
        problems.append("the documents were not each named once as skipped")
    if "future.jpg" not in checked:
        problems.append("a broken photo with a future mtime never became a row")
    for name, reason in (("pipe.jpg", "not-a-file"), ("gone.jpg", "broken-link")):
        if not (checked.get(name, {}).get("error") or "").startswith(reason):
            problems.append(f"{name}: {checked.get(name)}")
    if not re.search(rf"^{re.escape(str(folder / 'latest'))} leads into --out", output, re.MULTILINE):
        problems.append("no warning about the link into --out")
    if "\x1b" in output or "\\udc" in output:
        problems.append("a raw escape or undecodable name was printed")
    shown = {name for kind, name in LINE.findall(output) if name.startswith("bad")}
    gated = set(re.findall(r"^on-missing: \S+ exited 3 for (.*)$", output, re.MULTILINE))
    if len(shown) != 2 or gated != shown:
        problems.append(f"on-missing lines {gated} do not name the photos as their lines do {shown}")
    log = gate_log.read_text().splitlines() if gate_log.exists() else []
    running, most = 0, 0
    for line in log:
        running += 1 if line.startswith("start ") else -1
        most = max(most, running)
    failing = sorted(ascii(r["file"]) for r in records(out) if r["error"] or not r["has_stamp"])
    if sorted(line[6:] for line in log if line.startswith("start ")) != failing:
        problems.append("--on-missing did not run once for each photo that fails the gate")
    if sorted(line[4:] for line in log if line.startswith("end ")) != failing:
        problems.append("Ctrl-C stopped --on-missing commands before their end")
    if most > 4:
        problems.append(f"{most} --on-missing commands ran at once")
    assert not problems and proc.returncode == 130, "\n".join(problems) + "\n" + output


@pytest.mark.slow
def test_watch_skips_a_document_and_checks_a_photo_written_over_it(tiny_model, tmp_path):  # noqa: F811
    """A camera's placeholder (text under a photo's future name) is skipped once it has settled, not
    an unreadable row; the photo written over it later is checked."""
    folder, out = tmp_path / "camera", tmp_path / "report"
    folder.mkdir()
    (folder / "IMG_0001").write_text("placeholder")
    (folder / "a.jpg").write_bytes(jpeg(1))
    proc = start(tiny_model / "model", folder, out, tmp_path / "gate.log")
    wait_for(out, 1, proc)
    time.sleep(3)  # --settle 2: the placeholder is skipped by now
    (folder / "IMG_0001").write_bytes(jpeg(2))
    wait_for(out, 2, proc)
    output = stop(proc)
    assert rel_names(out, folder) == ["a.jpg", "IMG_0001"] and not any(r["error"] for r in records(out)), output
    assert output.count("skipped, not a photo by name or content: IMG_0001") == 1, output


@pytest.mark.slow
def test_one_watch_per_report_folder_and_a_removed_report_stops_it(tiny_model, tmp_path):  # noqa: F811
    folder, out = tmp_path / "camera", tmp_path / "report"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(1))
    proc = start(tiny_model / "model", folder, out, tmp_path / "gate.log")
    wait_for(out, 1, proc)
    second = subprocess.run([sys.executable, "-m", "stampcheck", "qa", tiny_model / "model", "--watch", folder,
                             "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = second.stdout + second.stderr
    assert second.returncode == 2 and len(output.strip().splitlines()) == 1, output
    assert f"another stampcheck run (pid {proc.pid}) is writing to --out {out}" in output
    assert len(records(out)) == 1

    shutil.rmtree(out)  # by hand, while watching: it stops at once and makes nothing again
    (folder / "b.jpg").write_bytes(jpeg(2))
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 4, output
    assert output.strip().splitlines()[-1] == f"error: {out} was removed while watching; stopped", output
    time.sleep(0.5)
    assert not out.exists()
