"""Waiting for a run: futures resolved when a run ends (or pauses at its first pending step). No Textual:
any front end that folds events into a :class:`~tui.run.RunModel` can let callers await its runs."""

from __future__ import annotations

import asyncio

from .model import RunModel, RunResult


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: list[tuple[int, bool, asyncio.Future[RunResult]]] = []

    def add(self, run_id: int, *, pending: bool = False) -> asyncio.Future[RunResult]:
        """A future for run ``run_id``'s end (with ``pending``: its first pending step as well)."""
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((run_id, pending, future))
        return future

    def wake(self, model: RunModel, *, finished: bool = False, everyone: bool = False) -> None:
        """Resolve the futures whose run ended (``finished``), paused, or was replaced by another run;
        ``everyone``: all of them (the run failed outside the controller)."""
        left = []
        for run_id, pending, future in self._waiting:
            if future.done():
                continue
            if everyone or run_id != model.run_id or finished or (pending and model.pending is not None):
                future.set_result(model.snapshot())
            else:
                left.append((run_id, pending, future))
        self._waiting = left
