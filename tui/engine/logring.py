"""An in-memory ring buffer for llama.cpp's log (so it never reaches the terminal)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

# enum ggml_log_level (ggml.h): NONE, DEBUG, INFO, WARN, ERROR, CONT
LEVEL_NAMES = {0: "none", 1: "debug", 2: "info", 3: "warn", 4: "error", 5: "cont"}
_CONT = 5


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    time: float
    level: str
    text: str


class LogRing:
    """Keeps the last ``capacity`` complete log lines.

    llama.cpp emits text in fragments (a line may arrive in several calls, and
    ``GGML_LOG_LEVEL_CONT`` continues the previous one); fragments are joined
    until a newline ends the line.
    """

    def __init__(self, capacity: int = 4000) -> None:
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._partial = ""
        self._partial_level = "info"
        self._seq = 0
        self._lock = threading.Lock()

    def write(self, level: int, text: str) -> None:
        with self._lock:
            if level != _CONT:
                self._partial_level = LEVEL_NAMES.get(level, "info")
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                if self._partial_level == "debug":
                    # llama.cpp logs graph inputs at debug level whenever a graph is rebuilt (after each
                    # context shift, ~100 lines): nothing here reads them, and they pushed out the rest
                    continue
                self._seq += 1
                self._lines.append(LogLine(self._seq, time.time(), self._partial_level, line))

    @property
    def mark(self) -> int:
        """A position: ``since(mark)`` returns lines written after it."""
        return self._seq

    def since(self, mark: int) -> list[LogLine]:
        with self._lock:
            return [line for line in self._lines if line.seq > mark]

    def lines(self) -> list[LogLine]:
        with self._lock:
            return list(self._lines)
