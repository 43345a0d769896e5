"""``llmtui web``: the dashboard in a browser, one llmtui process per tab, through textual-serve.

textual-serve renders each session with xterm.js over a websocket and has no access control. In front of
it this server puts what a shared machine needs:

- **who may connect**: without a token it must be bound to loopback and answers only requests addressed
  to a loopback name (a web page that rebinds its own DNS name to 127.0.0.1 gets 403); with a token every
  request needs it (``?token=`` once, then an HttpOnly cookie; or ``Authorization: Bearer``), else 401.
  A websocket from another origin is refused whatever the token (a page elsewhere cannot drive a session).
- **how many**: at most ``max_sessions`` processes; the next tab gets a page (or, if it raced past the
  page, a message in its terminal) saying why.
- **what comes in**: every websocket message is checked (type, size, terminal dimensions) before it
  reaches a session; a malformed one is dropped, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
import jinja2
import textual_serve
from aiohttp import WSMsgType, web
from textual_serve.server import Server

from .sessions import Session, SessionEnded

log = logging.getLogger("llmtui.web")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(textual_serve.__file__).parent / "static"
MAX_COLUMNS, MAX_ROWS = 500, 200
"""A browser window's terminal is never bigger; a larger size asked for is clamped (Textual allocates
per cell)."""
MAX_MESSAGE = 1 << 20
"""The largest websocket message (a paste) accepted, in bytes."""


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address as given to ``--host`` or found in a Host header, port stripped)
    reaches only this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(netloc: str) -> str:
    """The name part of ``host[:port]`` (IPv6 in brackets); "" for what is not one (``[::1``)."""
    try:
        return urlsplit(f"//{netloc}").hostname or ""
    except ValueError:
        return ""


def binding_problem(host: str, token: str | None) -> str | None:
    """Why ``host`` may not be bound with this token, or None: only loopback goes without one."""
    if token is None and not is_loopback(host):
        return (f"--host {host} lets other machines in: give --token (with no value for a random one); without "
                "a token llmtui web binds to loopback only")
    return None


@dataclass(frozen=True)
class WebOptions:
    argv: Sequence[str]
    """The command each session runs (``python -m tui.cli`` and the dashboard's arguments)."""
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    token: str | None = None
    starting: str = "Starting llmtui…"
    """What the page says while a session loads the model."""
    title: str = "llmtui"

    def __post_init__(self) -> None:
        if problem := binding_problem(self.host, self.token):
            raise ValueError(problem)
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")


class WebServer(Server):
    """textual-serve's server with access control, a session limit and sessions that end (module doc)."""

    def __init__(self, options: WebOptions, say: Callable[[str], None] = log.info) -> None:
        super().__init__(" ".join(options.argv), host=options.host, port=options.port, title=options.title)
        self.options = options
        self.say = say
        self.sessions: dict[int, Session] = {}
        self.ended: list[SessionEnded] = []
        self._numbers = 0
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.bound_port: int | None = None
        self.bound_address: str | None = None

    # -- the aiohttp application -----------------------------------------------------------------

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES))
        app.add_routes([
            web.get("/", self.handle_index, name="index"),
            web.get("/ws", self.handle_websocket, name="websocket"),
            web.get("/download/{key}", self.handle_download, name="download"),
            web.static("/static", STATIC, name="static"),
            web.get("/favicon.ico", self.handle_no_icon),
        ])
        app.on_shutdown.append(self.on_shutdown)
        return app

    @property
    def cookie_name(self) -> str:
        """Cookies are per host, not per port: two servers on one machine keep their tokens apart."""
        return f"llmtui_web_{self.bound_port or self.port}"

    def _token_ok(self, given: str | None) -> bool:
        token = self.options.token
        if not given or token is None:
            return False
        # a header's bytes that are not UTF-8 arrive as lone surrogates: compared as the bytes they were
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.options.token is None:
            if not is_loopback(host_name(request.host)):  # DNS rebinding: a page named evil.example → 127.0.0.1
                return self._notice(request, 403, "Not for this address", [
                    "This llmtui web server answers only to localhost (it was started without a token).",
                    "Open it as http://127.0.0.1:PORT/ on the machine that runs it."])
        else:
            query_token = request.query.get("token")
            if query_token is not None and self._token_ok(query_token) and request.path == "/":
                # once in the address bar, then a cookie: the token leaves the URL (and the history)
                rest = {k: v for k, v in request.query.items() if k != "token"}
                response = web.Response(status=303, headers={"Location": "/" + (f"?{urlencode(rest)}" if rest else "")})
                response.set_cookie(self.cookie_name, self.options.token, httponly=True, samesite="Strict",
                                    path="/")
                return response
            bearer = request.headers.get("Authorization", "")
            given = bearer[7:] if bearer.startswith("Bearer ") else request.cookies.get(self.cookie_name)
            if not self._token_ok(given):
                return self._notice(request, 401, "A token is needed", [
                    "This llmtui web server was started with --token: open the address it printed, "
                    "which ends in ?token=…, or ask whoever started it for the token."],
                    headers={"WWW-Authenticate": 'Bearer realm="llmtui"'})
        return await handler(request)

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """A browser always sends Origin on a websocket; a page elsewhere cannot forge it. A client that
        is not a browser sends none (it could send anything anyway: the token is what stops it)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        try:
            return urlsplit(origin).netloc.lower() == request.host.lower()
        except ValueError:
            return False

    @staticmethod
    def _notice(request: web.Request, status: int, heading: str, lines: list[str],
                headers: dict[str, str] | None = None, retry_s: int | None = None) -> web.Response:
        html = aiohttp_jinja2.render_string("notice.html", request,
                                            {"heading": heading, "lines": lines, "retry_s": retry_s})
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)

    def _full(self) -> bool:
        return len(self.sessions) >= self.options.max_sessions

    def _limit_lines(self) -> list[str]:
        n = self.options.max_sessions
        return [f"This llmtui web server already runs {len(self.sessions)} session(s), its limit "
                f"(--max-sessions {n}).",
                "Every browser tab is an llmtui process of its own that loads the model (its memory and CPU "
                "are taken for as long as the tab is open).",
                "Close another llmtui tab, try again later, or ask whoever started `llmtui web` to raise "
                "--max-sessions."]

    @staticmethod
    async def handle_no_icon(request: web.Request) -> web.Response:
        return web.Response(status=204)  # the browser asks; the page has none

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        if self._full():
            return self._notice(request, 503, "All sessions are in use", self._limit_lines(),
                                headers={"Retry-After": "30"}, retry_s=30)
        font_size = _clamp_int(request.query.get("fontsize"), 16, 6, 48)
        return aiohttp_jinja2.render_template("index.html", request, {
            "title": self.options.title,
            "static_url": "/static/",
            "font_size": font_size,
            "starting": self.options.starting,
        })

    # -- sessions --------------------------------------------------------------------------------

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return self._notice(request, 403, "Another site's page", [
                "A page from another origin tried to open an llmtui session; it was refused."])
        websocket = web.WebSocketResponse(heartbeat=15, max_msg_size=MAX_MESSAGE)
        await websocket.prepare(request)
        if self._closing:
            await websocket.close(code=1001, message=b"the server is stopping")
            return websocket
        if self._full():
            self.say(f"session refused: {len(self.sessions)} of {self.options.max_sessions} in use")
            text = "\x1b[2J\x1b[H\r\n  " + "\r\n\r\n  ".join(self._limit_lines()) + "\r\n"
            await websocket.send_bytes(text.encode())
            await websocket.close(code=1013, message=b"all sessions are in use")
            return websocket
        self._numbers += 1
        number = self._numbers
        session = Session(self.options.argv, number, on_end=self._ended, write_bytes=websocket.send_bytes,
                          write_str=websocket.send_str, close=websocket.close,
                          download_manager=self.download_manager)
        self.sessions[number] = session  # counted before the first await: two tabs cannot both take the last
        try:
            await session.start(*_terminal_size(request.query))
            if self._closing:  # the server began to stop while this one started: it ends at once
                return websocket
            self.say(f"session {number} started (pid {session.pid}); {len(self.sessions)} of "
                     f"{self.options.max_sessions} in use")
            watcher = asyncio.create_task(self._close_when_exited(session, websocket))
            try:
                await self._process_messages(websocket, session)
            finally:
                watcher.cancel()
        except asyncio.CancelledError:
            pass
        except Exception as error:  # a session's failure is logged, the server goes on
            log.exception(error)
        finally:
            await asyncio.shield(self._end(number, session, websocket))
        return websocket

    @staticmethod
    async def _close_when_exited(session: Session, websocket: web.WebSocketResponse) -> None:
        """A session that exits says so to textual-serve, which closes the tab's socket; one that dies
        without a word (a crash, a signal) would leave the tab waiting: its socket is closed here, with a
        line in its terminal if it never drew anything."""
        status = await session.exited()
        await asyncio.sleep(0.5)  # its last frames and its "exit" first
        if websocket.closed:
            return
        if session.sent_bytes == 0:
            text = (f"\r\n  llmtui: the session ended before it could start (exit status {status}); "
                    "the server's log has its error output.\r\n")
            with contextlib.suppress(Exception):
                await websocket.send_bytes(text.encode())
        with contextlib.suppress(Exception):
            await websocket.close()

    async def _end(self, number: int, session: Session, websocket: web.WebSocketResponse) -> None:
        try:
            await session.stop()
        finally:
            self.sessions.pop(number, None)
            if not websocket.closed:
                with contextlib.suppress(Exception):
                    await websocket.close()

    def _ended(self, ended: SessionEnded) -> None:
        self.ended.append(ended)
        del self.ended[:-100]
        code = "" if ended.returncode is None else f", exit status {ended.returncode}"
        self.say(f"session {ended.number} ended (pid {ended.pid}, {ended.how}{code}, after {ended.seconds:.1f} s)")
        if ended.returncode not in (0, None) and ended.how == "exited" and ended.error_output.strip():
            self.say(f"session {ended.number}'s last error output: {ended.error_output.strip()[-2000:]}")

    async def _process_messages(self, websocket: web.WebSocketResponse, session: Any) -> None:
        """The browser's messages, checked: ``["stdin", str]``, ``["resize", {width, height}]``,
        ``["ping", str]``, ``["focus"]``, ``["blur"]``; anything else is dropped."""
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                envelope = json.loads(message.data)
            except (ValueError, RecursionError):  # [[[[… nested beyond Python's stack
                continue
            if not isinstance(envelope, list) or not envelope or not isinstance(envelope[0], str):
                continue
            kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
            sent: Any = True
            if kind == "stdin" and isinstance(data, str):
                sent = await session.send(session.send_bytes(data.encode("utf-8", "replace")))
            elif kind == "resize" and isinstance(data, dict):
                sent = await session.send(session.set_terminal_size(*_terminal_size(data)))
            elif kind == "ping" and isinstance(data, str) and len(data) <= 64:
                await websocket.send_json(["pong", data])
            elif kind in ("blur", "focus"):
                sent = await session.send(session.send_meta({"type": kind}))
            if sent is False:  # it does not read its input (or has gone): the session ends
                return

    async def on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)

    # -- running ---------------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the port (``port`` 0 picks a free one)."""
        self._runner = web.AppRunner(await self._make_app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        addresses = self._runner.addresses
        if self.options.token is None and not all(is_loopback(str(a[0])) for a in addresses):
            await self.close()  # a name that resolved beyond this machine, without a token
            raise OSError(f"{self.options.host} resolved to {', '.join(str(a[0]) for a in addresses)}, beyond "
                          "this machine: give --token")
        self.bound_address = str(addresses[0][0])
        self.bound_port = int(addresses[0][1])
        return self.bound_port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # on_shutdown: every session's process ends
            self._runner = None

    async def serve_until_signal(self, ready: Callable[[int], None]) -> None:
        """Serve until SIGINT or SIGTERM, then end every session."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        port = await self.start()
        try:
            ready(port)
            await stop.wait()
        finally:
            await self.close()


def _terminal_size(asked: Any) -> tuple[int, int]:
    """(columns, rows) from the browser (the socket's query or a resize message), clamped."""
    return (_clamp_int(asked.get("width"), 80, 1, MAX_COLUMNS), _clamp_int(asked.get("height"), 24, 1, MAX_ROWS))


def _clamp_int(value: object, default: int, lo: int, hi: int) -> int:
    """An integer from the browser (a query parameter or a JSON field), within [lo, hi]."""
    if isinstance(value, bool):
        return default
    try:
        number = int(value) if isinstance(value, (int, str)) else default
    except ValueError:
        return default
    return max(lo, min(hi, number))
