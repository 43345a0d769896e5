"""The ASGI middleware that judges a request before anything reads its body: the API key, then the body size."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import OPEN_PATHS, ServerConfig
from .errors import error_response, too_large, unauthorized


class _BodyTooLarge(Exception):
    """Ends the app's read of a body that passed the limit."""


class Guard:
    """Pure ASGI middleware that judges a request before anything reads its body.

    Without the API key (when one is set) a request gets its 401 at once; a body
    larger than ``max_body_bytes`` gets a 413, at once when its Content-Length
    says so, else (chunked) as soon as the bytes received pass the limit. The
    unread rest of a refused body is discarded by uvicorn, never buffered.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.config.api_key
        if key and scope["path"] not in OPEN_PATHS and not _has_key(scope, key):
            await error_response(unauthorized(), {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await error_response(too_large(limit))(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def receive_limited() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:  # answer here: the app may turn any error while reading into its own 400
                        refused = True
                        await error_response(too_large(limit))(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the app answers to the interrupted read is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, receive_limited, send_unless_refused)
        except _BodyTooLarge:
            if not refused:
                raise


def _has_key(scope: Scope, key: str) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            given = given.strip()
            return scheme.lower() == b"bearer" and bool(given) and hmac.compare_digest(given, key.encode())
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses such a request before the app sees it
    return None
