"""Session recording and replay. Never imports textual.

:mod:`~tui.record.format` says what a recording is, :mod:`~tui.record.writer` writes one,
:mod:`~tui.record.reader` reads one back (every field checked by :mod:`~tui.record.checks`),
:mod:`~tui.record.tree` makes a recorded token tree a tree view again.
"""

from .format import FORMAT, READABLE, VERSION
from .reader import RecordedBranch, Session, SessionFileError, read_header, read_session
from .writer import AppendWriter, RecordError, RecordingExists, SessionWriter, append_event

__all__ = ["FORMAT", "READABLE", "VERSION", "AppendWriter", "RecordError", "RecordedBranch", "RecordingExists",
           "Session", "SessionFileError", "SessionWriter", "append_event", "read_header", "read_session"]
