"""Real headless Chromium driven over the DevTools protocol: navigate, evaluate, click where a
person would (mouse events at an element's centre), screenshot. Used by the report's tests and
bench/report.py; the caller skips when no Chromium is installed."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000, timeout: float = 60):
        from websockets.sync.client import connect

        self.timeout, self.next_id, self.events, self.stack = timeout, 0, [], ExitStack()
        self.proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, end = None, time.monotonic() + timeout
        while url is None and time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m and m[1]
        if url is None:
            self.close()
            raise RuntimeError("chromium printed no DevTools address")
        # the rest of its chatter must not fill the pipe and stall it
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.ws = self.stack.enter_context(connect(url, max_size=None, open_timeout=timeout))
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=None)["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def send(self, method: str, params: dict | None = None, session: str | None | bool = True) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session is True:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            answer = json.loads(self.ws.recv(self.timeout))
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str):
        """The value of ``expression`` in the page (a promise is awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll ``expression`` until it is truthy; its value."""
        end = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < end:
            try:
                value = self.js(expression)
            except RuntimeError:  # the page between two documents
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"waited in vain for {expression}")

    def click(self, selector: str) -> None:
        """A left click at the centre of the first element ``selector`` finds, as a mouse does it."""
        box = self.js(f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                      "e.scrollIntoView({block:'center'});var b=e.getBoundingClientRect();"
                      "return [b.left+b.width/2,b.top+b.height/2]})()")
        x, y = box
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
