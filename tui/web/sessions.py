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
import ctypes.util
import logging
import os
import signal
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual_serve.app_service import AppService

log = logging.getLogger("llmtui.web")

QUIT_WAIT_S = 4.0
"""How long a session has to exit after textual-serve's "quit" (the app saves its state and closes the
model), before SIGTERM."""
TERM_WAIT_S = 3.0
"""After SIGTERM, before SIGKILL."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, between fork and exec: the kernel kills it when the server's thread that started it
    ends. Not thread-safe code may not run here; ``prctl`` through ctypes is a single system call."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class SessionEnded:
    """How a session's process ended (for the server's log and the tests)."""

    pid: int
    returncode: int | None
    how: str  # "quit" (it exited when asked), "SIGTERM", "SIGKILL", "exited" (on its own)
    seconds: float


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
            preexec_fn=_die_with_parent,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def on_data(self, payload: bytes) -> None:
        self.sent_bytes += len(payload)
        await super().on_data(payload)

    async def stop(self) -> None:
        """End the session's process: ask, then signal its group, each after a bounded wait. Called from
        its socket's handler and from the server's shutdown, maybe both at once: it runs once."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        how = "exited" if process.returncode is not None else "quit"
        if process.returncode is None:
            with contextlib.suppress(Exception):  # its stdin may be gone already
                await self.send_meta({"type": "quit"})
            for sig, wait in ((None, QUIT_WAIT_S), (signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    how = sig.name
                    with contextlib.suppress(ProcessLookupError):
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
        with contextlib.suppress(Exception):
            await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        self.on_end(SessionEnded(process.pid, process.returncode, how, time.monotonic() - self.started_at))
