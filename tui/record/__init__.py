"""Session recording and replay. Never imports textual.

:mod:`~tui.record.format` says what a recording is, :mod:`~tui.record.writer` writes one,
:mod:`~tui.record.reader` reads one back (every field checked by :mod:`~tui.record.checks`).
"""

from .format import FORMAT, VERSION
from .reader import Session, SessionFileError, read_header, read_session
from .writer import RecordError, RecordingExists, SessionWriter, append_event

__all__ = ["FORMAT", "VERSION", "RecordError", "RecordingExists", "Session", "SessionFileError", "SessionWriter",
           "append_event", "read_header", "read_session"]
