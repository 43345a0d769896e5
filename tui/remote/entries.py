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
POLL_WAIT = 4.0  # seconds a fleet poll waits for the slowest server (twice the view's interval)


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
    """The servers this session knows: their entries, their backends once connected, their metrics. Used from
    worker threads (the app's load worker, the fleet view's poller): every shared map is behind a lock, and
    one server is connected once even when two threads ask for it at the same time."""

    def __init__(self, specs: list[RemoteSpec] | None = None, *, probe: bool = False, n_probs: int = 20,
                 timeout: float | None = None) -> None:
        self.specs: dict[str, RemoteSpec] = {}
        self.backends: dict[str, Backend] = {}
        self.infos: dict[str, Any] = {}  # what each server said when it was connected (names the entries)
        self.probe = probe  # attach in probe mode (our chain on the server's top-K) rather than streaming
        self.n_probs = n_probs
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connecting: dict[str, threading.Lock] = {}
        self._polls: dict[str, _Poll] = {}  # a server's poll still in flight is not asked again
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: RemoteSpec) -> ModelEntry:
        """Remember ``spec``; its catalog entry (raises RemoteError for what is not a URL)."""
        spec = RemoteSpec(normalise_url(spec.url), spec.api_key, spec.backend)
        with self._lock:
            self.specs.setdefault(spec.url, spec)
        return self.entry(spec)

    def entry(self, spec: RemoteSpec) -> ModelEntry:
        with self._lock:
            info = self.infos.get(spec.url)
        name = f"{info.model} @ {spec.shown}" if info is not None else spec.shown
        return ModelEntry(name=name, path=spec.url, source=REMOTE, arch=info.backend if info else spec.backend,
                          quant="remote", n_ctx_train=(info.n_ctx or 0) if info else 0,
                          n_vocab=(info.n_vocab or 0) if info else 0, has_chat_template=bool(info and info.chat))

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            specs = list(self.specs.values())
        return [self.entry(s) for s in specs]

    def backend(self, url: str) -> Backend:
        """The connected backend for ``url`` (detected on first use). Raises RemoteError."""
        from . import connect

        with self._lock:
            found = self.backends.get(url)
            spec = self.specs.get(url) or RemoteSpec(url)
            gate = self._connecting.setdefault(url, threading.Lock())
        if found is not None:
            return found
        with gate:  # one connection per server, however many threads ask
            with self._lock:
                found = self.backends.get(url)
            if found is not None:
                return found
            backend = connect(spec.url, api_key=spec.api_key, backend=spec.backend, timeout=self.timeout)
            info = backend.info()
            with self._lock:
                self.backends[url] = backend
                self.infos[url] = info
        return backend

    def forget(self, url: str) -> None:
        """Detect ``url`` again next time (it failed: it may come back as something else)."""
        with self._lock:
            self.backends.pop(url, None)

    def load(self, entry: Any) -> Loaded:
        """Attach to a server as a model load does: an engine, or EngineError with the one line why."""
        from .source import RemoteEngine

        t0 = time.perf_counter()
        try:
            engine = RemoteEngine(self.backend(entry.path), n_probs=self.n_probs)
        except RemoteError as exc:
            self.forget(entry.path)
            raise EngineError(str(exc)) from None
        engine.probe_default = self.probe
        return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)

    def poll(self, wait: float = POLL_WAIT) -> list[MetricsSample]:
        """One metrics sample per server, asked in parallel; a server that has not answered within ``wait``
        seconds (or still has not, from the last poll) says so in its row. Nothing raises."""
        with self._lock:
            specs = list(self.specs.values())
            polls = []
            for spec in specs:
                running = self._polls.get(spec.url)
                if running is None or running.done.is_set():
                    running = self._polls[spec.url] = _Poll(spec, self)
                polls.append(running)
        deadline = time.perf_counter() + wait
        for running in polls:
            running.done.wait(max(0.0, deadline - time.perf_counter()))
        return [p.sample if p.done.is_set() and p.sample is not None else
                MetricsSample(url=p.spec.shown, backend=p.spec.backend, model="", healthy=False,
                              error=f"no answer within {wait:g} s (still waiting)") for p in polls]

    def _sample(self, spec: RemoteSpec) -> MetricsSample:
        try:
            return self.backend(spec.url).metrics()
        except RemoteError as exc:
            if exc.kind in ("refused", "unreachable", "died", "timeout"):
                self.forget(spec.url)
            return MetricsSample(url=spec.shown, backend=spec.backend, model="", healthy=False, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in one backend must not take the fleet view down
            return MetricsSample(url=spec.shown, backend=spec.backend, model="", healthy=False,
                                 error=f"{type(exc).__name__}: {exc}")


class _Poll:
    """One server's poll, on a daemon thread of its own (a server that hangs holds only its own thread)."""

    def __init__(self, spec: RemoteSpec, remotes: Remotes) -> None:
        self.spec = spec
        self.sample: MetricsSample | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(remotes,), name="llmtui-fleet-poll", daemon=True).start()

    def _run(self, remotes: Remotes) -> None:
        try:
            self.sample = remotes._sample(self.spec)
        finally:
            self.done.set()
