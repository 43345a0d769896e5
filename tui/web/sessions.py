"""One browser tab, one llmtui process: textual-serve's ``AppService`` made to start and end reliably.

textual-serve starts each session with ``/bin/sh -c COMMAND`` and, when the tab closes, asks the app to
quit and waits for it without a limit. Checked on this kind of machine: when the server died, the app it
had started kept running at full CPU and ignored SIGTERM. So a session here is

- started without a shell, from an argument list (no quoting, and the pid is the app's own);
- in a process group of its own, so that ending it ends whatever it started;
- tied to the server by ``PR_SET_PDEATHSIG`` (Linux): if the server dies, even by SIGKILL, the kernel
  sends the session SIGKILL;
- ended in steps when its tab closes: textual-serve's "quit" message, then SIGTERM, then SIGKILL, each
  after a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from textual_serve.app_service import AppService

log = logging.getLogger("llmtui.web")

QUIT_WAIT_S = 6.0
"""How long a session has to exit after textual-serve's "quit" (the app saves its state and closes the
model), before SIGTERM."""
TERM_WAIT_S = 3.0
"""After SIGTERM, before SIGKILL."""
SEND_WAIT_S = 5.0
"""The longest a message to a session may wait for it to read its input: a session that stops reading is
ended, not waited for (its slot and the server's shutdown would wait with it)."""
STDERR_KEPT = 64 * 1024
"""The tail of a session's error output kept for the server's log."""

_PR_SET_PDEATHSIG = 1
# looked up once, here: between fork and exec (where the child of a threaded server may only make system
# calls) nothing may be loaded or run but the call itself
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> None:
    """In the child, between fork and exec: the kernel sends it SIGKILL when the server's thread that
    started it ends; a server that died before that is noticed at once."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


@dataclass(frozen=True)
class SessionEnded:
    """How a session's process ended (for the server's log and the tests)."""

    number: int
    pid: int
    returncode: int | None
    how: str  # "quit" (it exited when asked), "SIGTERM", "SIGKILL", "exited" (on its own)
    seconds: float
    error_output: str = ""
    """The tail of what it wrote to stderr (untrusted text: shown through the sanitiser)."""


class Session(AppService):
    """A browser tab's llmtui process (see the module's docstring)."""

    def __init__(self, argv: Sequence[str], number: int, *, on_end: Callable[[SessionEnded], None],
                 **kwargs: object) -> None:
        super().__init__(" ".join(argv), **kwargs)  # type: ignore[arg-type]
        self.argv = list(argv)
        self.number = number
        self.on_end = on_end
        self.started_at = time.monotonic()
        self.sent_bytes = 0
        self._stopping: asyncio.Future[None] | None = None
        self._stderr_tail = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def exited(self) -> int | None:
        """Wait until the process has exited; its status (None if it never started)."""
        return await self._process.wait() if self._process is not None else None

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        environment = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        assert process.stdin is not None and process.stderr is not None
        self._stdin = process.stdin
        # textual-serve would keep all of it in memory until the end: here only its tail is kept
        self._stderr_task = asyncio.create_task(self._keep_stderr_tail(process.stderr))
        process.stderr = asyncio.StreamReader()
        process.stderr.feed_eof()
        return process

    async def _keep_stderr_tail(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while chunk := await stream.read(4096):
                self._stderr_tail += chunk
                del self._stderr_tail[:-STDERR_KEPT]

    @property
    def error_output(self) -> str:
        """The last of what the session wrote to stderr (decoded; the caller shows it through the
        sanitiser)."""
        return self._stderr_tail.decode("utf-8", "replace")

    async def send(self, message: Awaitable[bool]) -> bool:
        """A message to the session (``send_bytes``, ``send_meta``…), waited for at most SEND_WAIT_S."""
        try:
            return await asyncio.wait_for(message, SEND_WAIT_S)
        except asyncio.TimeoutError:
            return False

    async def on_data(self, payload: bytes) -> None:
        self.sent_bytes += len(payload)
        await super().on_data(payload)

    async def stop(self) -> None:
        """End the session's process: ask, then signal its group, each after a bounded wait. Called from
        its socket's handler and from the server's shutdown, maybe both at once: it runs once (once there
        is a process: a stop before it started does nothing, and the next one does the work)."""
        if self._process is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        process = self._process
        assert process is not None
        how = "exited" if process.returncode is not None else "quit"
        if process.returncode is None:
            with contextlib.suppress(Exception):  # its stdin may be gone already
                await asyncio.wait_for(self.send_meta({"type": "quit"}), 1.0)
            for sig, wait in ((None, QUIT_WAIT_S), (signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    how = sig.name
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, sig)
                try:
                    await asyncio.wait_for(process.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    continue
        # what is left of the group (a child the app started) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
            self._task = None
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 2.0)
        with contextlib.suppress(Exception):
            await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        self.on_end(SessionEnded(self.number, process.pid, process.returncode, how,
                                 time.monotonic() - self.started_at, self.error_output))
