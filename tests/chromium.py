"""Drive a headless Chromium over the DevTools protocol, with the standard library only.

Chromium's ``--remote-debugging-pipe`` reads protocol commands from file descriptor 3 and writes
replies and events to file descriptor 4, one JSON message per NUL-terminated chunk (the transport
Puppeteer and Playwright use). A pipe needs no port, no websocket library and no polling of an
HTTP endpoint, and every console message, uncaught exception, log entry (CSP violations, failed
loads) and network request arrives as an event, so a test can assert that there were none.

Usage::

    with Chromium(binary, profile_dir) as browser:
        page = browser.open("file:///tmp/report.html#suite=adtech")
        page.evaluate("document.title")
        page.screenshot(path)
        page.errors   # console errors, uncaught exceptions, error log entries
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Chromium", "Page", "find_chromium"]

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


# Chromium wants the protocol on fds 3 and 4 exactly. Rather than juggling descriptors between
# fork and exec (preexec_fn: unsafe with threads, and fd 3 or 4 may be the very pipe being moved),
# a tiny Python process moves them out of the way (F_DUPFD >= 10), onto 3 and 4, then execs.
_TRAMPOLINE = """
import fcntl, os, sys
fds = [fcntl.fcntl(int(a), fcntl.F_DUPFD, 10) for a in sys.argv[1:3]]
for src in sys.argv[1:3]:
    os.close(int(src))
for target, fd in zip((3, 4), fds):
    os.dup2(fd, target)
    os.set_inheritable(target, True)
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def find_chromium() -> str | None:
    """$CHROMIUM (or $CHROME_BIN), else the first Chromium/Chrome on PATH."""
    for env in ("CHROMIUM", "CHROME_BIN"):
        path = os.environ.get(env)
        if path and shutil.which(path):
            return shutil.which(path)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ProtocolError(RuntimeError):
    pass


class Chromium:
    def __init__(self, binary: str, profile_dir: Path, *, timeout: float = 30.0) -> None:
        self.binary = binary
        self.profile_dir = Path(profile_dir)
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ process

    def __enter__(self) -> Chromium:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.stderr_path = self.profile_dir / "chromium-stderr.log"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _TRAMPOLINE,
                    str(to_browser_r),
                    str(from_browser_w),
                    self.binary,
                    *FLAGS,
                    f"--user-data-dir={self.profile_dir}",
                    "--remote-debugging-pipe",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(to_browser_r, from_browser_w),
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.send("Target.setDiscoverTargets", {"discover": False})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.send("Browser.close", timeout=5)
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ------------------------------------------------------------------ protocol

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ProtocolError(
                    f"Chromium closed the pipe; its stderr: {self.stderr_path.read_text(errors='replace')[-2000:]}"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode("utf-8") + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._on_event(reply)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["method"] == "Page.javascriptDialogOpening":
            # An alert() would block the page: record it (as an error) and dismiss it.
            msg = {
                "id": -1,
                "method": "Page.handleJavaScriptDialog",
                "params": {"accept": False},
                "sessionId": event.get("sessionId"),
            }
            os.write(self._to_browser, json.dumps(msg).encode("utf-8") + b"\0")

    def wait_for(
        self, method: str, *, session: str, timeout: float | None = None
    ) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == method and e.get("sessionId") == session and not e.get("_seen"):
                e["_seen"] = True
                return e
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self._on_event(event)
                if event["method"] == method and event.get("sessionId") == session:
                    event["_seen"] = True
                    return event

    # ------------------------------------------------------------------ pages

    def open(self, url: str, *, width: int = 1400, height: int = 2400) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        page = Page(self, session, target)
        page.navigate(url)
        return page


class Page:
    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    def navigate(self, url: str) -> None:
        result = self.browser.send("Page.navigate", {"url": url}, session=self.session)
        if result.get("errorText"):
            raise ProtocolError(f"navigation to {url} failed: {result['errorText']}")
        self.browser.wait_for("Page.loadEventFired", session=self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.browser.send(
            "Page.captureScreenshot", {"format": "png"}, session=self.session, timeout=60
        )["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def print_pdf(self) -> bytes:
        data = self.browser.send(
            "Page.printToPDF", {"printBackground": True}, session=self.session, timeout=90
        )["data"]
        return base64.b64decode(data)

    def _events(self, *methods: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.browser.events
            if e.get("sessionId") == self.session and e["method"] in methods
        ]

    @property
    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls, error log entries, dialogs."""
        out = []
        for e in self._events(
            "Runtime.exceptionThrown",
            "Runtime.consoleAPICalled",
            "Log.entryAdded",
            "Page.javascriptDialogOpening",
        ):
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(
                    f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}"
                )
            elif e["method"] == "Runtime.consoleAPICalled":
                if p["type"] in ("error", "assert"):
                    out.append(
                        "console."
                        + p["type"]
                        + ": "
                        + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                    )
            elif e["method"] == "Log.entryAdded":
                if p["entry"]["level"] == "error":
                    out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
            else:
                out.append(f"dialog opened: {p.get('type')} {p.get('message')!r}")
        return out

    @property
    def requests(self) -> list[str]:
        """Every URL the page asked for (the page itself included)."""
        return [e["params"]["request"]["url"] for e in self._events("Network.requestWillBeSent")]
