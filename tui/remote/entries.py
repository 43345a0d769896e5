"""Remote servers next to local models: catalog entries, connecting, and polling a fleet (no Textual).

``llmtui --remote URL`` (repeatable) and a URL typed into the model picker
become :class:`~tui.engine.models.ModelEntry` rows with ``source="remote"``;
:class:`Remotes` knows each one's key and backend, attaches to it (a
:class:`~tui.remote.source.RemoteEngine`, as a model load gives an engine) and
polls them all for the fleet view.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..engine.errors import EngineError
from ..engine.models import ModelEntry
from ..engine.pool import Loaded
from .backend import Backend, MetricsSample
from .http import RemoteError, normalise_url, safe_url

REMOTE = "remote"  # ModelEntry.source of a server


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    url: str  # normalised, credentials kept (they go in requests, never on screen)
    api_key: str | None = None
    backend: str = "auto"

    @property
    def shown(self) -> str:
        return safe_url(self.url)


def looks_like_url(text: str) -> bool:
    """What a user typed into the model picker names a server (``http://…``, ``https://…``, ``host:port``)."""
    t = text.strip()
    if t.startswith(("http://", "https://")):
        return True
    host, sep, port = t.rpartition(":")
    return bool(sep and host and port.isdigit() and " " not in t and "/" not in host)


class Remotes:
    """The servers this session knows: their entries, their backends once connected, their metrics."""

    def __init__(self, specs: list[RemoteSpec] | None = None, *, probe: bool = False, n_probs: int = 20,
                 timeout: float | None = None) -> None:
        self.specs: dict[str, RemoteSpec] = {}
        self.backends: dict[str, Backend] = {}
        self.probe = probe  # attach in probe mode (our chain on the server's top-K) rather than streaming
        self.n_probs = n_probs
        self.timeout = timeout
        self._lock = threading.Lock()
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: RemoteSpec) -> ModelEntry:
        """Remember ``spec``; its catalog entry (raises RemoteError for what is not a URL)."""
        spec = RemoteSpec(normalise_url(spec.url), spec.api_key, spec.backend)
        with self._lock:
            self.specs.setdefault(spec.url, spec)
        return self.entry(spec)

    def entry(self, spec: RemoteSpec) -> ModelEntry:
        backend = self.backends.get(spec.url)
        info = backend.info() if backend is not None else None
        name = f"{info.model} @ {spec.shown}" if info is not None else spec.shown
        return ModelEntry(name=name, path=spec.url, source=REMOTE, arch=info.backend if info else spec.backend,
                          quant="remote", n_ctx_train=(info.n_ctx or 0) if info else 0,
                          n_vocab=(info.n_vocab or 0) if info else 0, has_chat_template=bool(info and info.chat))

    def entries(self) -> list[ModelEntry]:
        return [self.entry(s) for s in list(self.specs.values())]

    def backend(self, url: str) -> Backend:
        """The connected backend for ``url`` (detected on first use). Raises RemoteError."""
        from . import connect

        with self._lock:
            found = self.backends.get(url)
            spec = self.specs.get(url) or RemoteSpec(url)
        if found is not None:
            return found
        backend = connect(spec.url, api_key=spec.api_key, backend=spec.backend, timeout=self.timeout)
        with self._lock:
            self.backends[url] = backend
        return backend

    def load(self, entry: Any) -> Loaded:
        """Attach to a server as a model load does: an engine, or EngineError with the one line why."""
        from .source import RemoteEngine

        t0 = time.perf_counter()
        try:
            engine = RemoteEngine(self.backend(entry.path), n_probs=self.n_probs)
        except RemoteError as exc:
            with self._lock:
                self.backends.pop(entry.path, None)  # the next try detects again
            raise EngineError(str(exc)) from None
        engine.probe_default = self.probe
        return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)

    def poll(self) -> list[MetricsSample]:
        """One metrics sample per server (a server that fails says why in its row; nothing raises)."""
        out = []
        for spec in list(self.specs.values()):
            try:
                backend = self.backend(spec.url)
                sample = backend.metrics()
            except RemoteError as exc:
                with self._lock:
                    self.backends.pop(spec.url, None) if exc.kind in ("refused", "unreachable", "died") else None
                sample = MetricsSample(url=spec.shown, backend=spec.backend, model="", healthy=False, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug in one backend must not take the fleet view down
                sample = MetricsSample(url=spec.shown, backend=spec.backend, model="", healthy=False,
                                       error=f"{type(exc).__name__}: {exc}")
            out.append(sample)
        return out
