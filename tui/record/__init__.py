"""Session recording and replay. Never imports textual."""

from .session import (
    FORMAT,
    VERSION,
    RecordError,
    Session,
    SessionFileError,
    SessionWriter,
    append_event,
    default_session_path,
    read_session,
)

__all__ = ["FORMAT", "VERSION", "RecordError", "Session", "SessionFileError", "SessionWriter",
           "append_event", "default_session_path", "read_session"]
