"""Running the HTTP app: uvicorn in a background thread, its logs kept off the terminal."""

from __future__ import annotations

import logging
import threading
import time

from fastapi import FastAPI


class ServerThread:
    """uvicorn in a background thread (the dashboard, the tests); ``port=0`` picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
        import uvicorn

        self.host = host
        self.config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                     lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, name="llmtui-api-http", daemon=True)
        self.port = port

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException:  # e.g. the port is taken (uvicorn exits through SystemExit): start() says so
            return

    def start(self, timeout: float = 15.0) -> "ServerThread":
        quiet_uvicorn()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the API server could not listen on {self.host}:{self.config.port} "
                              "(is the port taken?)")
            time.sleep(0.02)
        for server in self.server.servers:
            for sock in server.sockets:
                self.port = sock.getsockname()[1]
                break
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def quiet_uvicorn() -> None:
    """uvicorn must never write to the terminal a TUI is drawing on: its logs go nowhere.

    ``llmtui.server`` (our 500s and their tracebacks) keeps its handlers (``llmtui serve`` attaches one for
    stderr) and still propagates (to pytest's caplog, say); its NullHandler keeps a record that nobody
    handles from Python's last-resort stderr handler."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [logging.NullHandler()]
        lg.propagate = False
    ours = logging.getLogger("llmtui.server")
    if not any(isinstance(h, logging.NullHandler) for h in ours.handlers):
        ours.addHandler(logging.NullHandler())
