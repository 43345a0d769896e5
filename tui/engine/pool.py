"""Loaded models kept in a small LRU, so switching back to one is instant.

llama.cpp maps the model file (mmap): a cold load maps it and builds the
context; a model kept in the pool is simply handed back ("warm"). Models that
fall out of the pool are closed, which returns their memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Loaded:
    engine: Any
    cold: bool
    ms: float  # wall time of this request (load + context when cold)


class EnginePool:
    def __init__(self, factory: Callable[[str, Callable[[float], None] | None], Any], capacity: int = 2) -> None:
        self.factory = factory  # (path, on_progress) -> engine
        self.capacity = max(1, capacity)
        self._engines: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, on_progress: Callable[[float], None] | None = None) -> Loaded:
        t0 = time.perf_counter()
        with self._lock:
            engine = self._engines.get(path)
            if engine is not None:
                self._engines.move_to_end(path)
                return Loaded(engine, False, (time.perf_counter() - t0) * 1000.0)
        engine = self.factory(path, on_progress)
        with self._lock:
            self._engines[path] = engine
            self._engines.move_to_end(path)
            while len(self._engines) > self.capacity:
                _old_path, old = self._engines.popitem(last=False)
                old.close()
        return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)

    @property
    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._engines)

    def close_all(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
