"""Internal errors (bugs): one line for the user, the traceback in the cache dir's crash.log."""

from __future__ import annotations

import traceback

from .config import app_dirs


def crash_log(exc: BaseException) -> str:
    """Append ``exc``'s traceback to crash.log; returns where (or why it was not written)."""
    path = app_dirs().cache / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(traceback.format_exception(exc)) + "\n")
    except OSError as err:
        return f"not written: {err.strerror or err}"
    return str(path)
