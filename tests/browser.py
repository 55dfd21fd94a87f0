"""Headless Chromium for the tests of static pages, over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ended by a NUL byte on file descriptors 3 and 4), so no
websocket package and no port are needed.

    with Browser(binary) as b:
        report = b.load("file:///.../index.html")   # failed requests, console errors, broken images
        b.screenshot("file:///...", "shot.png", 1280, 900)
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The first Chromium found on PATH (``$CHROMIUM`` first), or None."""
    for name in ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(NAMES):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What loading one page gave: requests that failed, console errors and uncaught exceptions,
    error entries of the browser's log, and images that did not decode."""

    url: str
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    title: str = ""

    @property
    def problems(self) -> list[str]:
        return self.failed + self.errors + [f"image did not load: {u}" for u in self.broken_images]


class Browser:
    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="dgnam-chromium-")
        to_r, to_w = os.pipe()      # we write, the browser reads (its fd 3)
        from_r, from_w = os.pipe()  # the browser writes (its fd 4), we read

        def fds() -> None:
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self.w, self.r = to_w, from_r
        self.buf, self.next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for fd in (self.w, self.r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed its pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def _wait(self, match: Any, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self._read(deadline)
            if match(msg):
                return msg
            self.events.append(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        reply = self._wait(lambda m: m.get("id") == want, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _goto(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self._wait(lambda m: m.get("method") == "Page.loadEventFired")

    def _eval(self, expr: str) -> Any:
        return self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=True)["result"].get("value")

    def load(self, url: str) -> PageReport:
        """Load ``url`` (all its images, even lazy ones) and report what went wrong."""
        self._goto(url)
        # lazy images load when near the viewport: make every one eager and wait for them all
        self._eval("Array.from(document.images).forEach(function (i) { i.loading = 'eager'; })")
        deadline = time.monotonic() + self.timeout
        while not self._eval("Array.from(document.images).every(function (i) { return i.complete; })"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        rep = PageReport(url, title=self._eval("document.title") or "")
        rep.broken_images = self._eval("Array.from(document.images).filter(function (i) { return !i.complete || "
                                       "i.naturalWidth === 0; }).map(function (i) { return i.src; })") or []
        for m in self.events + self._drain():
            p, kind = m.get("params", {}), m.get("method")
            if kind == "Network.loadingFailed":
                rep.failed.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
            elif kind == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                rep.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif kind == "Runtime.exceptionThrown":
                rep.errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif kind == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                rep.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return rep

    def _drain(self) -> list[dict]:
        out = []
        try:
            while True:
                out.append(self._read(time.monotonic() + 0.2))
        except TimeoutError:
            return out

    def screenshot(self, url: str, path: str | Path, width: int = 1280, height: int = 900) -> Path:
        """A PNG of the page's first ``width`` x ``height`` pixels, every image loaded."""
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)
        self.load(url)
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
