"""Misbehaving inference servers for the bad-input tests (stdlib only, 127.0.0.1, one port).

One :class:`FakeServers` serves every behaviour under its own path prefix, so a base URL such as
``http://127.0.0.1:P/dies`` is one server as ``tui.remote`` sees it (backends append ``/v1/...``):

* ``html``  — every path: a proxy's 502 HTML error page (an ESC in its reason phrase);
* ``webui`` — every path: 200 with an HTML page (the address of a web UI, not of the API);
* ``auth``  — every path: 401 with an OpenAI error body whose message holds an ESC and markup;
* ``slow``  — every path: nothing for 3 s (released at once when the fixture stops);
* ``dies``  — /v1/models lists a model; /v1/completions streams two tokens (legacy completions with
  logprobs, as llama-cpp-python's server sends them) in HTTP/1.1 chunks, then drops the connection;
* ``reset`` — the same two tokens, then a TCP reset (a killed server with unread input);
* ``ends``  — the same two tokens, then the connection closes cleanly: no finish_reason, no [DONE];
* ``oom``   — the same two tokens, then an error event (``data: {"error": ...}``, an ESC in its message);
* ``stall`` — one token, then silence for 3 s (released when the fixture stops);
* ``nolp``  — /v1/completions with ``logprobs`` in the body: 400 "logprobs are not supported";
  without: a text-only stream that ends properly.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ESC = "\x1b[31m"  # what a hostile (or merely careless) server puts in its text
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]}
AUTH_BODY = {"error": {"message": f"Incorrect API key provided {ESC}[bold]x[/]", "type": "invalid_request_error",
                       "code": "invalid_api_key"}}
NOLP_BODY = {"error": {"message": f"logprobs are not supported {ESC}", "type": "invalid_request_error"}}
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n")
WEBUI_PAGE = b"<!doctype html>\n<html><head><title>Chat</title></head><body><div id=app></div></body></html>\n"
TOKENS = (" Paris", " is")  # what ``dies``, ``ends`` and ``nolp`` stream before they fail (or finish)
STALL_S = 3.0  # how long ``slow`` and ``stall`` keep quiet (the clients under test wait 1 s)


def completion_chunk(text: str, *, logprobs: bool = True, finish: str | None = None) -> bytes:
    """One server-sent event of a streamed legacy completion."""
    choice: dict[str, Any] = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    if logprobs:
        choice["logprobs"] = {"text_offset": [0], "tokens": [text], "token_logprobs": [-0.25],
                              "top_logprobs": [{text: -0.25, " London": -1.75}]}
    event = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet stdlib handler that reads a JSON body and calls ``_answer(method, body)`` (the fake servers')."""

    protocol_version = "HTTP/1.0"  # one answer per connection, unless a behaviour says otherwise

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._answer("GET", None)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._answer("POST", body)

    def _answer(self, method: str, body: Any) -> None:
        raise NotImplementedError


class _Handler(JsonHandler):
    server: FakeServers

    def _answer(self, method: str, body: Any) -> None:
        parts = self.path.split("?", 1)[0].split("/")
        kind, path = (parts[1] if len(parts) > 1 else ""), "/" + "/".join(parts[2:])
        with self.server.lock:
            self.server.requests.append((kind, method, path, body, self.headers.get("Authorization")))
        try:
            getattr(self, f"_{kind}", self._missing)(method, path, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client under test gave up first: that is what it should do

    # -- plain answers -----------------------------------------------------------------------------------

    def _send(self, status: int, ctype: str, data: bytes, reason: str | None = None) -> None:
        self.send_response(status, reason)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _missing(self, method: str, path: str, body: Any) -> None:
        self._json(404, {"detail": "Not Found"})

    def _models_or_missing(self, method: str, path: str) -> bool:
        """Answer /v1/models (True), or 404 for anything that is not the completions endpoint."""
        if method == "GET" and path == "/v1/models":
            self._json(200, MODELS)
            return True
        if not (method == "POST" and path == "/v1/completions"):
            self._missing(method, path, None)
            return True
        return False

    def _sse_head(self, chunked: bool) -> None:
        if chunked:
            self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- behaviours --------------------------------------------------------------------------------------

    def _html(self, method: str, path: str, body: Any) -> None:
        self._send(502, "text/html", HTML_PAGE, reason=f"Bad Gateway {ESC}")

    def _webui(self, method: str, path: str, body: Any) -> None:
        self._send(200, "text/html; charset=utf-8", WEBUI_PAGE)

    def _auth(self, method: str, path: str, body: Any) -> None:
        self._json(401, AUTH_BODY)

    def _slow(self, method: str, path: str, body: Any) -> None:
        self.server.release.wait(STALL_S)
        self._json(200, MODELS)

    def _dies(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        self._sse_head(chunked=True)
        for token in TOKENS:
            self._chunk(completion_chunk(token))
        # no terminating zero-length chunk: the connection drops in the middle of the answer
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        self._sse_head(chunked=False)
        for token in TOKENS:
            self.wfile.write(completion_chunk(token))
        self.wfile.flush()
        # linger on with a zero timeout: close() sends RST instead of FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _ends(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        self._sse_head(chunked=False)
        for token in TOKENS:
            self.wfile.write(completion_chunk(token))
        # HTTP/1.0: the body ends when the connection closes, here before any finish_reason or [DONE]

    def _oom(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        self._sse_head(chunked=False)
        for token in TOKENS:
            self.wfile.write(completion_chunk(token))
        error = {"error": {"message": f"CUDA out of memory {ESC}", "type": "server_error", "code": 500}}
        self.wfile.write(b"data: " + json.dumps(error).encode() + b"\n\n")

    def _stall(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        self._sse_head(chunked=False)
        self.wfile.write(completion_chunk(TOKENS[0]))
        self.wfile.flush()
        self.server.release.wait(STALL_S)

    def _nolp(self, method: str, path: str, body: Any) -> None:
        if self._models_or_missing(method, path):
            return
        if isinstance(body, dict) and "logprobs" in body:
            self._json(400, NOLP_BODY)
            return
        self._sse_head(chunked=False)
        for token in TOKENS:
            self.wfile.write(completion_chunk(token, logprobs=False))
        self.wfile.write(completion_chunk("", logprobs=False, finish="length"))
        self.wfile.write(b"data: [DONE]\n\n")


class FakeServers(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str, Any, str | None]] = []  # kind, method, path, body, Authorization
        self.release = threading.Event()  # set: the slow behaviours answer at once

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}"

    def seen(self, kind: str) -> list[tuple[str, str, Any, str | None]]:
        with self.lock:
            return [r[1:] for r in self.requests if r[0] == kind]


@contextmanager
def fake_servers() -> Iterator[FakeServers]:
    httpd = FakeServers()
    thread = threading.Thread(target=httpd.serve_forever, name="fake-remote-servers", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def refused_url() -> str:
    """A URL whose port nothing listens on (bound, read, closed: the kernel refuses connections to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


UNREACHABLE = "http://nonexistent.invalid:8080"  # .invalid never resolves (RFC 6761)
