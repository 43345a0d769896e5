"""Waiting for a run: futures resolved when a run ends (or pauses at its first pending step). No Textual:
any front end that folds events into a :class:`~tui.run.RunModel` can let callers await its runs."""

from __future__ import annotations

import asyncio
from typing import Any

from .model import RunModel, RunResult


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: list[tuple[int, bool, asyncio.Future[RunResult], Any]] = []

    def add(self, run_id: int, *, pending: bool = False, replacing: Any = None) -> asyncio.Future[RunResult]:
        """A future for run ``run_id``'s end (with ``pending``: its first pending step as well; ``replacing``:
        a pending step other than this one — what a re-sample waits for, whatever other events come first)."""
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((run_id, pending, future, replacing))
        return future

    def wake(self, model: RunModel, *, finished: bool = False) -> None:
        """Resolve the futures of ``model``'s run when it ended (``finished``) or, for those that asked,
        paused at a pending step."""
        left = []
        for run_id, pending, future, replacing in self._waiting:
            if future.done():
                continue
            now = model.pending
            if run_id != model.run_id or finished or (pending and now is not None and now is not replacing):
                future.set_result(model.snapshot())
            else:
                left.append((run_id, pending, future, replacing))
        self._waiting = left

    def release(self, model: RunModel) -> None:
        """Resolve every future with the run as it stands: before the model starts another run (whoever
        waited learns how far theirs got: its phase is not a final one), or when the run failed outside
        the controller."""
        for _, _, future, _ in self._waiting:
            if not future.done():
                future.set_result(model.snapshot())
        self._waiting = []
