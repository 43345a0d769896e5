"""Errors the engine raises for the user to read (one line, no traceback)."""

from __future__ import annotations


class EngineError(Exception):
    """A problem the user can act on. ``str(err)`` is a complete one-line message."""


class ModelFileError(EngineError):
    """The model file is missing, not a GGUF file, or damaged."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ContextError(EngineError):
    """The context could not be created with the requested settings. When memory was the reason,
    the figures are fields (``largest_n_ctx``: the largest context that would fit)."""

    def __init__(self, message: str, *, largest_n_ctx: int | None = None, needed: int | None = None,
                 available: int | None = None) -> None:
        super().__init__(message)
        self.largest_n_ctx = largest_n_ctx
        self.needed = needed
        self.available = available
