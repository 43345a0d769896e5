"""Recording from the dashboard (``--record``, ``ctrl+r``): a Recorder listens to the controller's runs while
it is on; a lab run becomes an event of the current recording."""

from __future__ import annotations

import os
from typing import Any

from ..record import RecordError, SessionWriter, append_event
from ..record.recorder import Recorder
from ..record.writer import session_header


class Recording:
    """``first``: where the first recording goes ("" or None: a new name in the sessions directory)."""

    def __init__(self, app: Any, on: bool, first: str | None) -> None:
        self.app = app
        self.on = on
        self._next = first or None

    def sync(self) -> None:
        """The controller (a new one for each model) has one Recorder; it records while recording is on."""
        ctl = self.app.controller
        if ctl is None:
            return
        recorder = next((listen for listen in ctl.listeners if isinstance(listen, Recorder)), None)
        if recorder is None:
            recorder = Recorder(self.app.engine, self.new_writer, self.app.emit)
            ctl.listeners.append(recorder)
        recorder.enabled = self.on  # read when a run starts: the current recording always finishes

    def set(self, on: bool) -> bool:
        """Recording on or off (from the next run on); returns what it was."""
        was, self.on = self.on, on
        self.sync()
        self.app.dashboard.update_status()
        return was

    def toggle(self) -> None:
        self.set(not self.on)
        self.app.notify("recording from the next generation on" if self.on else "recording off", timeout=3)

    def new_writer(self, header: dict[str, Any]) -> SessionWriter:
        """Called in the worker at the start of each run (recording on)."""
        from ..config import app_dirs

        app = self.app
        path, self._next = self._next, None
        if path:
            return SessionWriter(path, header, app.engine.piece)
        return SessionWriter.new_in(app_dirs().sessions, app.model_label, header, app.engine.piece)

    def lab(self, lab: str, data: dict[str, Any]) -> None:
        """A lab run from the UI while recording: its results become an event of the session recording
        (the current one, or a session of its own when nothing was generated yet)."""
        app = self.app
        if not self.on or app.engine is None:
            return
        run = app.dashboard.model
        try:
            if run.record_path and os.path.exists(run.record_path):
                append_event(run.record_path, "lab", len(run.steps), lab=lab, result=data)
                where = run.record_path
            else:
                writer = self.new_writer(session_header(app.engine, app.preset, app.settings.seed, "", [],
                                                        max_tokens=app.max_tokens))
                writer.event("lab", 0, lab=lab, result=data)
                writer.footer(stop_reason="lab", summary={})
                where = run.record_path = str(writer.path)
        except RecordError as exc:
            app.notify(str(exc), severity="error", timeout=10)
            return
        app.notify(f"{lab} lab results recorded in {os.path.basename(where)}", timeout=4)
