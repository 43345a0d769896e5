"""``llmtui web``: the dashboard served to browsers by textual-serve, one llmtui process per tab.

Above the engine and beside the CLI: it never imports the app (each session is a separate process
running ``python -m tui.cli``) nor Textual's widgets.
"""

from .server import WebOptions, WebServer, binding_problem, is_loopback
from .sessions import Session, SessionEnded

__all__ = ["Session", "SessionEnded", "WebOptions", "WebServer", "binding_problem", "is_loopback"]
