"""Session recording and replay. Never imports textual."""

from .session import (
    FORMAT,
    VERSION,
    RecordError,
    RecordingExists,
    Session,
    SessionFileError,
    SessionWriter,
    append_event,
    read_header,
    read_session,
)

__all__ = ["FORMAT", "VERSION", "RecordError", "RecordingExists", "Session", "SessionFileError", "SessionWriter",
           "append_event", "read_header", "read_session"]
