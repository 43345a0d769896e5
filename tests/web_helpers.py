"""Driving ``llmtui web`` for real: the server as a process, and a page in Debian's Chromium whose terminal
is read back as a VT100 screen (pyte fed with exactly the bytes the page's xterm.js was sent).

Shared by tests/test_web*.py, benchmarks/bench_web.py and screenshots/make_web_screenshot.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHROMIUM = os.environ.get("LLMTUI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def browser_missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
        import pyte  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[dev]')"
    return None


class WebProcess:
    """``llmtui [BEFORE…] web --port 0 [ARGS…]``: started, its stderr read line by line, stopped by PID."""

    def __init__(self, *args: str, home: Path, before: tuple[str, ...] = (), timeout: float = 60.0) -> None:
        env = {**os.environ, "LLMTUI_HOME": str(home), "HF_HUB_CACHE": str(home / "hf")}
        self.proc = subprocess.Popen([sys.executable, "-m", "tui.cli", *before, "web", "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            found = self.wait_line(r"serving the dashboard on (http://\S+)", timeout)
        except BaseException:
            self.stop()
            raise
        self.url = found.group(1)
        self.base = self.url.split("?")[0]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first line (from line ``after`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if m := regex.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._changed.wait(0.2)):
                    raise AssertionError(f"no line matching {pattern!r} in {timeout:.0f} s; stderr:\n"
                                         + "\n".join(self.lines[-20:]))
                self._changed.wait(min(left, 0.5))

    def wait_session(self, number: int, timeout: float = 30.0) -> int:
        """The pid of the ``number``-th session started (1-based), once the server has said so."""
        return int(self.wait_line(rf"session {number} started \(pid (\d+)\)", timeout).group(1))

    def session_pids(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(r"session \d+ started \(pid (\d+)\)", line))]

    def wait_ended(self, pid: int, timeout: float = 20.0) -> str:
        """How session ``pid`` ended (the server's log line), once its process is gone."""
        line = self.wait_line(rf"session \d+ ended \(pid {pid}, (\w+)", timeout).group(1)
        deadline = time.monotonic() + 5
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_alive(pid), f"session process {pid} still runs after the server said it ended"
        return line

    def stop(self) -> int:
        """SIGTERM by PID (never by name); SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def process_alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


async def open_session(base: str, headers: dict[str, str] | None = None, *, width: int = 120,
                       height: int = 40) -> tuple[Any, Any]:
    """(aiohttp client, websocket) of a new session at the server ``base`` (http://host:port/), as a page
    would open it but drawing nothing; close the client when done."""
    import aiohttp

    client = aiohttp.ClientSession()
    ws_url = base.replace("http://", "ws://") + f"ws?width={width}&height={height}"
    try:
        ws = await client.ws_connect(ws_url, headers=headers or {})
    except Exception:
        await client.close()
        raise
    return client, ws


async def read_until(ws: Any, needle: bytes, timeout: float = 60.0) -> bytes:
    """Terminal bytes from the session until ``needle`` was among them (or the socket closed)."""
    import asyncio

    import aiohttp

    got = b""
    async with asyncio.timeout(timeout):
        while needle not in got:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                got += msg.data
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
    return got


class TerminalPage:
    """A Chromium page showing llmtui web, and its terminal as text: every binary frame the page's
    websocket receives (what xterm.js draws) also goes into a pyte screen of the size the page asked for."""

    def __init__(self, page: Any) -> None:
        import pyte

        self.page = page
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.frames = 0
        self.closed_socket = False
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        query = parse_qs(urlsplit(ws.url).query)
        self.screen.resize(int(query.get("height", ["24"])[0]), int(query.get("width", ["80"])[0]))
        ws.on("framereceived", self._received)
        ws.on("framesent", self._sent)
        ws.on("close", lambda _ws: setattr(self, "closed_socket", True))

    def _received(self, payload: Any) -> None:
        if isinstance(payload, bytes):
            self.frames += 1
            self.stream.feed(payload)

    def _sent(self, payload: Any) -> None:
        if isinstance(payload, str) and payload.startswith('["resize"'):
            m = re.search(r'"width":(\d+),"height":(\d+)', payload)
            if m:
                self.screen.resize(int(m.group(2)), int(m.group(1)))

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str | re.Pattern[str], timeout: float = 60.0) -> str:
        """Wait (pumping the page's events) until the terminal shows ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if (needle.search(text) if isinstance(needle, re.Pattern) else needle in text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared in the browser's terminal:\n{text}")
            self.page.wait_for_timeout(100)

    def wait_gone(self, needle: str, timeout: float = 30.0) -> str:
        """Wait until the terminal no longer shows ``needle``."""
        deadline = time.monotonic() + timeout
        while needle in (text := self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} stayed in the browser's terminal:\n{text}")
            self.page.wait_for_timeout(100)
        return text

    def focus(self) -> None:
        """Keyboard focus to the terminal without a click (a click is also a mouse event for the app)."""
        self.page.focus(".xterm-helper-textarea")

    def cell_center(self, row: int, col: int) -> tuple[float, float]:
        """Page coordinates of a terminal cell's centre."""
        box = self.page.locator(".xterm-screen").bounding_box()
        assert box is not None
        width, height = box["width"] / self.screen.columns, box["height"] / self.screen.lines
        return box["x"] + (col + 0.5) * width, box["y"] + (row + 0.5) * height

    def find(self, needle: str) -> tuple[int, int]:
        """(row, column) of ``needle``'s first occurrence on the screen, in cells (a wide character such
        as 中 takes two: pyte keeps it in one cell and leaves the next empty)."""
        for row in range(self.screen.lines):
            cells = [self.screen.buffer[row][x].data for x in range(self.screen.columns)]
            index = "".join(cells).find(needle)
            if index < 0:
                continue
            length = 0
            for col, data in enumerate(cells):
                if length == index and data:
                    return row, col
                length += len(data)
        raise AssertionError(f"{needle!r} is not on the screen:\n{self.text()}")

    def click_text(self, needle: str, offset: int = 0) -> None:
        row, col = self.find(needle)
        x, y = self.cell_center(row, col + offset)
        self.page.mouse.click(x, y)


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless; playwright's own browser download is never used."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
