"""A local OpenAI-compatible API on the instrumented engine (``llmtui serve``, ``llmtui --serve``).

:mod:`tui.server.service` is the engine side (queue, worker, stop strings,
logprobs) and imports no web framework; :mod:`tui.server.http` is the FastAPI
app (its request bodies, guard, errors, answers and uvicorn runner in modules of
their own beside it). None imports Textual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .service import ApiError, GenRequest, Job, Service

__all__ = ["ApiError", "GenRequest", "Job", "Service", "LocalServer", "start_local"]


@dataclass(slots=True)
class LocalServer:
    """A running server: the service, its HTTP thread and what it serves."""

    service: Service
    http: Any  # tui.server.http.ServerThread
    controller: Any

    @property
    def url(self) -> str:
        return self.http.url

    def stop(self) -> None:
        self.http.stop()
        self.service.close()


def start_local(engine: Any, entry: Any, *, catalog: Any, preset: Any, seed: int | None, host: str = "127.0.0.1",
                port: int = 0, api_key: str | None = None, max_tokens: int = 256,
                models: Callable[[], Sequence[Any]] | None = None, recorder_factory: Any = None,
                context_policy: str = "stop", on_event: Callable[[object], None] | None = None,
                max_body_bytes: int | None = None, cors_origins: Sequence[str] = (),
                allow_grammar: bool = False) -> LocalServer:
    """Serve ``engine`` (already loaded from ``entry``) in background threads; ``port=0`` picks a free one.
    ``on_event`` sees the controller's events (from the engine thread), e.g. RecordingFailed;
    ``max_body_bytes`` bounds a request body (default :data:`~tui.server.http.MAX_BODY_BYTES`)."""
    from ..engine.controller import Controller
    from .http import MAX_BODY_BYTES, ServerConfig, ServerThread, create_app

    controller = Controller(engine, preset, seed=42 if seed is None else seed, emit=on_event or (lambda event: None), max_tokens=max_tokens,
                            context_policy=context_policy)
    if recorder_factory is not None:
        from ..record.recorder import Recorder

        controller.listeners.append(Recorder(engine, recorder_factory, on_event or (lambda event: None)))
    service = Service(lambda: controller).start()
    config = ServerConfig(catalog=catalog, default_preset=lambda: preset, seed=seed, max_tokens=max_tokens,
                          api_key=api_key, loaded=lambda: entry, models=models or (lambda: [entry]),
                          max_body_bytes=MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes,
                          cors_origins=tuple(cors_origins), allow_grammar=allow_grammar)
    try:
        http = ServerThread(create_app(service, config), host, port).start()
    except BaseException:
        service.close()
        raise
    return LocalServer(service, http, controller)
