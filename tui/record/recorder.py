"""Recording as a listener of a run's events: the engine knows nothing of files.

A :class:`Recorder` is added to a controller's listeners (``controller.listeners``)
and writes one session per run: the header when the run starts, each step once
it is accepted (after any re-sample), preset changes and re-samples as events,
the stopped event and footer when it finishes. A recording that fails (disk
full, unwritable place) is reported through ``report`` and stops recording,
never the generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..engine.controller import Accepted, Finished, PresetChanged, Resampled, Started
from .writer import RecordError, SessionWriter, session_header


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    path: str


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    message: str


class Recorder:
    """``factory(header) -> SessionWriter`` opens each run's recording (a fixed file, or a new name
    in a directory); ``report`` gets :class:`RecordingStarted` / :class:`RecordingFailed`."""

    def __init__(self, engine: Any, factory: Callable[[dict[str, Any]], SessionWriter],
                 report: Callable[[object], None] = lambda event: None) -> None:
        self.engine = engine
        self.factory = factory
        self.report = report
        self.writer: SessionWriter | None = None
        # read when a run starts: switching recording off mid-run lets the current recording finish
        self.enabled = True

    def __call__(self, event: object) -> None:
        if isinstance(event, Accepted):
            if self.writer is not None:
                step = event.step
                layout = self.engine.kv_layout()
                kv = layout.used(step.n_past + 1) if layout is not None else 0
                self._write(lambda w: w.step(step, kv_bytes=kv))
        elif isinstance(event, Started):
            self._open(event)
        elif isinstance(event, PresetChanged):
            self._write(lambda w: w.event("preset_changed", event.at_step, preset=event.spec.as_dict()))
        elif isinstance(event, Resampled):  # after a run the writer is closed: nothing is written
            kind = "forced" if event.step.forced else "resampled"  # the user's choice, or another draw
            self._write(lambda w: w.event(kind, event.step.index, preset=event.spec.as_dict(),
                                          token=event.step.token))
        elif isinstance(event, Finished):
            self._write(lambda w: w.finish(event.reason.value if event.reason else None, event.error,
                                           event.summary, event.text))
            self.writer = None

    def _open(self, ev: Started) -> None:
        self.writer = None
        if not self.enabled:
            return
        try:
            header = session_header(self.engine, ev.spec, ev.seed, ev.given, ev.prompt_tokens,
                                    max_tokens=ev.max_tokens, ignore_eos=ev.ignore_eos, parent=ev.parent,
                                    history=ev.history)
            self.writer = self.factory(header)
        except RecordError as exc:
            self.report(RecordingFailed(str(exc)))
            return
        self.report(RecordingStarted(str(self.writer.path)))

    def _write(self, write: Callable[[SessionWriter], None]) -> None:
        if self.writer is None:
            return
        try:
            write(self.writer)
        except RecordError as exc:
            self.writer = None
            self.report(RecordingFailed(str(exc)))
