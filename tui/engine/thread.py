"""One long-lived thread for everything that runs the model.

llama.cpp's CPU backend (OpenMP) keeps a team of worker threads per thread
that calls ``llama_decode``. When two threads take turns decoding in one
process, both teams stay around and compete for the cores: on this 2-core
machine a run alternating with another thread's runs measured ~70 tok/s
against ~110 when one thread does all the decoding (and a dashboard run after
an API request dropped from ~90 to ~58). So every caller that decodes — the
dashboard's generations, the API server's requests, the labs, the
experiments, the benchmarks' baselines — hands its work to this one thread and
waits for the result.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EngineThread:
    """A daemon thread running submitted calls in order (a quitting app never waits for a lab run)."""

    def __init__(self, name: str = "llmtui-engine") -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple, dict]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            future, fn, args, kwargs = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, never lost
                future.set_exception(exc)
            else:
                future.set_result(result)

    @property
    def on_it(self) -> bool:
        """True when the calling code already runs on the engine thread."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the engine thread and return (or raise) what it did; re-entrant."""
        if self.on_it:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()


_shared: EngineThread | None = None
_lock = threading.Lock()


def engine_thread() -> EngineThread:
    """The process's engine thread (created on first use)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = EngineThread()
        return _shared
