"""The OpenAI-compatible API server inside the dashboard (``--serve``, ``S``): every request is a run the
live dashboard shows, like one typed in the prompt box (its preset is the request's own)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..run import Phase


class ApiHost:
    """Starts and stops the server for ``app`` and shows its requests on the live dashboard."""

    def __init__(self, app: Any, serve_at: tuple[str, int], api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.serve_at = serve_at
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.server: Any = None  # tui.server.LocalServer-like: .service, .http
        self.job: Any = None  # the request the live dashboard shows
        self._closing = False

    @property
    def busy(self) -> bool:
        """A client's request is running: the dashboard's controls wait for the next run."""
        return self.job is not None and self.app.running

    def toggle(self) -> None:
        if self.server is not None:
            self.stop()
            self.app.notify("API server stopped", timeout=3)
            self.app.dashboard.update_status()
        else:
            self.start()

    def start(self) -> None:
        """Serve the loaded model on the OpenAI API; every request shows up in the panels."""
        app = self.app
        if self.server is not None:
            return
        if app.controller is None:
            app.notify("load a model first", severity="warning")
            return
        try:
            from ..server import LocalServer, Service
            from ..server.http import ServerConfig, ServerThread, create_app
        except ImportError as exc:  # fastapi / uvicorn missing from a partial install
            app.notify(f"the API server needs fastapi and uvicorn: {exc}", severity="error", timeout=10)
            return
        service = Service(lambda: app.controller if app.engine is not None else None, begin=self._begin).start()
        config = ServerConfig(
            catalog=app.catalog, default_preset=lambda: app.preset,
            seed=app.settings.seed if app.seed_given else None,  # else each request gets a fresh one
            max_tokens=app.max_tokens, api_key=self.api_key, loaded=self.model_entry,
            max_body_bytes=self.max_body_bytes,
            models=lambda: app.discover() if app.discover is not None else [e for e in [self.model_entry()] if e],
        )
        host, port = self.serve_at
        log_server_errors_to_file()
        try:
            http = ServerThread(create_app(service, config), host, port).start()
        except OSError as exc:
            service.close()
            app.notify(str(exc), severity="error", timeout=10)
            return
        self.server = LocalServer(service, http, None)
        self.serve_at = (host, http.port)
        app.dashboard.update_status()  # the port is on the status line (whoever started it: S, --serve)
        app.notify(f"OpenAI-compatible API on {http.url}" + (" (API key required)" if self.api_key else "")
                   + " — requests show up here live", timeout=8)

    def model_entry(self) -> Any:
        """The loaded model as the API names it (None while loading)."""
        app = self.app
        if app.engine is None:
            return None
        if app.entry is not None:
            return app.entry
        from ..engine.models import ModelEntry

        return ModelEntry(name=app.model_label, path=str(getattr(app.engine, "path", "")), source="path")

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            self._closing = True  # the worker no longer waits for this thread
            try:
                server.stop()
            finally:
                self._closing = False

    def _begin(self, job: Any) -> int:
        """Worker thread: a request is about to run; the panels switch to it. Returns its run id
        (-1: not shown, when the UI does not answer within 2 s — it is closing)."""
        if self._closing:
            return -1
        done = threading.Event()
        run_id = [-1]

        def show() -> None:
            try:
                self.job = job
                run_id[0] = self.app.dashboard.new_run(job.shown, Phase.PROMPT, job.label, f"API #{job.id}")
            finally:
                done.set()

        try:
            self.app.call_later(show)  # posts a message: safe from any thread
        except Exception:
            return -1
        done.wait(2.0)
        return run_id[0]


def log_server_errors_to_file() -> None:
    """The API server's error log (a 500's traceback) cannot go to the terminal the dashboard draws on:
    it goes to ``api-errors.log`` in the cache directory (once per process)."""
    from ..config import app_dirs

    logger = logging.getLogger("llmtui.server")
    if any(getattr(h, "llmtui_file", False) for h in logger.handlers):
        return
    path = app_dirs().cache / "api-errors.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return
    handler.llmtui_file = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
