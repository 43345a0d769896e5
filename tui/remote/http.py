"""Talking to a remote inference server over HTTP (stdlib only; no Textual, no llama_cpp).

Every way a server can fail — nothing listening, a host that does not
resolve, a wrong API key, an HTML error page from a proxy, a server that stops
answering, one that dies mid-stream — becomes one :class:`RemoteError` whose
message is a single line a user can act on. Whatever the server says is
untrusted: bodies are size-bounded, decoded leniently, and any of their text
that reaches a message goes through :func:`tui.safe_text.visible`.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..safe_text import visible

MAX_BODY = 16 * 1024 * 1024  # a JSON answer larger than this is not one we asked for
MAX_LINE = 4 * 1024 * 1024  # one streamed event
DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a server counts as not answering


class RemoteError(Exception):
    """A remote server could not do what was asked; ``str()`` is one line for the status bar or CLI."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # refused, unreachable, auth, html, timeout, died, http, bad-json, unsupported


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(visible(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def safe_url(url: str) -> str:
    """``url`` without user name, password or query (what recordings and screens show)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def normalise_url(url: str) -> str:
    """A base URL from what a user typed: ``host:port`` gets ``http://``; a trailing ``/v1`` or ``/`` goes
    (backends add their own paths). Raises :class:`RemoteError` for what cannot be a server's address."""
    text = url.strip()
    if not text:
        raise RemoteError("empty server URL", kind="bad-url")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"not a server URL: {_one_line(url)} (expected http://host:port)", kind="bad-url")
    try:
        parts.port
    except ValueError:
        raise RemoteError(f"not a server URL: {_one_line(url)} (bad port)", kind="bad-url") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(slots=True)
class Endpoint:
    """A server's base URL and credentials; the requests every backend makes."""

    url: str
    api_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    headers: dict[str, str] = field(default_factory=dict)
    _live: set[Any] = field(default_factory=set, repr=False, compare=False)  # responses being streamed
    _aborted: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def abort(self) -> None:
        """Stop the streams being read now (from any thread): their sockets are shut down, so a read blocked on
        a silent server returns at once; the streams end quietly. :meth:`reset_abort` before the next one."""
        self._aborted.set()
        for resp in list(self._live):
            sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset_abort(self) -> None:
        self._aborted.clear()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def __post_init__(self) -> None:
        self.url = normalise_url(self.url)
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is not None and "Authorization" not in self.headers:
            import base64

            raw = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode("ascii")
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def shown(self) -> str:
        return safe_url(self.url)

    def _request(self, path: str, body: Any = None) -> urllib.request.Request:
        headers = {"Accept": "application/json, text/event-stream, */*", "User-Agent": "llmtui", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(self.url + path, data=data, headers=headers,
                                      method="POST" if body is not None else "GET")

    def _open(self, path: str, body: Any = None, timeout: float | None = None) -> http.client.HTTPResponse:
        where = f"{self.shown}{path}"
        try:
            return urllib.request.urlopen(self._request(path, body), timeout=timeout or self.timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, where) from None
        except urllib.error.URLError as exc:
            raise _network_error(exc.reason, where, timeout or self.timeout) from None
        except (TimeoutError, socket.timeout) as exc:
            raise _network_error(exc, where, timeout or self.timeout) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _network_error(exc, where, timeout or self.timeout) from None

    def get_text(self, path: str, *, timeout: float | None = None, limit: int = MAX_BODY) -> str:
        with self._open(path, timeout=timeout) as resp:
            return _read(resp, f"{self.shown}{path}", limit, timeout or self.timeout).decode("utf-8", "replace")

    def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        return self._json(path, None, timeout)

    def post_json(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        return self._json(path, body, timeout)

    def _json(self, path: str, body: Any, timeout: float | None) -> Any:
        where = f"{self.shown}{path}"
        with self._open(path, body, timeout) as resp:
            _refuse_html(resp, where)
            data = _read(resp, where, MAX_BODY, timeout or self.timeout)
        return _parse_json(data, where)

    def stream(self, path: str, body: Any, *, timeout: float | None = None) -> Iterator[Any]:
        """POST ``body`` and yield each streamed JSON event: server-sent events (``data: {...}``, ending at
        ``data: [DONE]``) or JSON lines (Ollama). A stream that breaks off raises :class:`RemoteError`
        (kind ``died``); the caller decides whether it had ended (each protocol marks its own end)."""
        where = f"{self.shown}{path}"
        limit = timeout or self.timeout
        with self._open(path, body, timeout) as resp:
            _refuse_html(resp, where)
            self._live.add(resp)
            try:
                yield from self._events(resp, where, limit)
            finally:
                self._live.discard(resp)

    def _events(self, resp: Any, where: str, limit: float) -> Iterator[Any]:
        while True:
            if self._aborted.is_set():
                return  # stopped by the user: the caller knows (it asked)
            try:
                raw = resp.readline(MAX_LINE + 1)
            except (TimeoutError, socket.timeout):
                raise RemoteError(f"{where} stopped sending for {limit:g} s mid-answer", kind="timeout") from None
            except (ConnectionError, http.client.HTTPException, OSError, ValueError) as exc:
                if self._aborted.is_set():
                    return
                why = _one_line(str(exc) or type(exc).__name__, 80)
                raise RemoteError(f"{where} broke off the stream mid-answer ({why})", kind="died") from None
            if not raw or self._aborted.is_set():
                return
            if len(raw) > MAX_LINE:
                raise RemoteError(f"{where} sent a streamed event over {MAX_LINE // 2**20} MiB", kind="bad-json")
            if not raw.endswith(b"\n"):  # the connection ended inside an event
                raise RemoteError(f"{where} broke off the stream mid-answer (inside an event)", kind="died")
            line = raw.strip()
            if not line or line.startswith(b":"):
                continue
            if line.startswith(b"data:"):
                line = line[5:].strip()
                if line == b"[DONE]":
                    return
            elif line.startswith((b"event:", b"id:", b"retry:")):
                continue
            event = _parse_json(line, where)
            if isinstance(event, dict) and "error" in event and not _is_progress(event):
                raise RemoteError(f"{where}: {error_text(event)}", kind="http")
            yield event


def _is_progress(event: dict[str, Any]) -> bool:
    # an OpenAI chunk carries "choices"; an Ollama line "response"/"message"; an error event neither
    return any(key in event for key in ("choices", "response", "message", "content"))


def error_text(body: Any) -> str:
    """A server's error body as one line: OpenAI's ``{"error": {"message"}}``, FastAPI's ``{"detail"}``,
    Ollama's ``{"error": "..."}``, llama-server's ``{"error": {"code", "message"}}``."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err.get("msg", err))
        if isinstance(err, list) and err and isinstance(err[0], dict):
            err = err[0].get("msg", err[0])
        if err is not None:
            return _one_line(str(err))
    return _one_line(str(body))


def _read(resp: Any, where: str, limit: int, timeout: float) -> bytes:
    try:
        data = resp.read(limit + 1)
    except (TimeoutError, socket.timeout):
        raise RemoteError(f"{where} did not finish its answer within {timeout:g} s", kind="timeout") from None
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        raise RemoteError(f"{where} broke off its answer ({_one_line(str(exc) or type(exc).__name__, 80)})",
                          kind="died") from None
    if len(data) > limit:
        raise RemoteError(f"{where} answered with more than {limit // 2**20} MiB", kind="bad-json")
    return data


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        head = data[:200].decode("utf-8", "replace")
        if head.lstrip().lower().startswith(("<!doctype", "<html")):
            raise RemoteError(f"{where} answered with an HTML page, not JSON: is this the API's address?",
                              kind="html") from None
        raise RemoteError(f"{where} answered with something that is not JSON: {_one_line(head, 60)!s}",
                          kind="bad-json") from None


def _refuse_html(resp: Any, where: str) -> None:
    ctype = (resp.headers.get("Content-Type") or "").lower()
    if "text/html" in ctype:
        raise RemoteError(f"{where} answered with an HTML page, not the API: is this the API's address?",
                          kind="html")


def _http_error(exc: urllib.error.HTTPError, where: str) -> RemoteError:
    try:
        data = exc.read(64 * 1024)
    except Exception:  # noqa: BLE001 - the status says enough
        data = b""
    ctype = (exc.headers.get("Content-Type") or "").lower() if exc.headers else ""
    head = data[:200].decode("utf-8", "replace").lstrip().lower()
    if "text/html" in ctype or head.startswith(("<!doctype", "<html")):
        detail = f"an HTML error page ({exc.code} {_one_line(exc.reason or '', 40)})"
    else:
        try:
            detail = error_text(json.loads(data))
        except (ValueError, UnicodeDecodeError):
            detail = _one_line(data.decode("utf-8", "replace") or str(exc.reason), 100)
    if exc.code in (401, 403):
        return RemoteError(f"{where} refused the request ({exc.code}): wrong or missing API key? (--api-key) "
                           f"— {detail}", status=exc.code, kind="auth")
    if exc.code == 404:
        return RemoteError(f"{where} does not exist on this server (404): another backend? (--backend) — {detail}",
                           status=404, kind="not-found")
    kind = "html" if detail.startswith("an HTML error page") else "http"
    return RemoteError(f"{where} answered {exc.code}: {detail}", status=exc.code, kind=kind)


def _network_error(reason: Any, where: str, timeout: float) -> RemoteError:
    if isinstance(reason, ConnectionRefusedError):
        return RemoteError(f"connection refused at {where}: is the server running on that port?", kind="refused")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return RemoteError(f"{where} did not answer within {timeout:g} s", kind="timeout")
    if isinstance(reason, socket.gaierror):
        return RemoteError(f"cannot resolve the host of {where}: check the URL", kind="unreachable")
    if isinstance(reason, ssl.SSLError):
        return RemoteError(f"TLS failed for {where}: {_one_line(str(reason), 80)}", kind="unreachable")
    if isinstance(reason, (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
        return RemoteError(f"{where} closed the connection without an answer: is it an HTTP API?", kind="died")
    if isinstance(reason, OSError) and reason.errno in (101, 113, 110):  # network / host unreachable, timed out
        return RemoteError(f"cannot reach {where}: {_one_line(reason.strerror or str(reason), 60)}",
                           kind="unreachable")
    return RemoteError(f"cannot reach {where}: {_one_line(str(reason), 80)}", kind="unreachable")
