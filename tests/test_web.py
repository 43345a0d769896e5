"""``llmtui web`` without a browser: the real server (a subprocess) and real sessions (llmtui processes on
SmolLM2) over HTTP and websockets — who may connect, how many, and that a session's process ends with its
socket and with the server. The browser itself: tests/test_web_browser.py."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import run
from tests.web_helpers import WebProcess, open_session, process_alive, read_until
from tui.web.server import _clamp_int, is_loopback

TOKEN = "a-test-token-1234567890"


def token_server_cookie(base: str) -> str:
    return "llmtui_web_" + base.rstrip("/").rsplit(":", 1)[1]


def raw_status(base: str, header: bytes, path: str = "/") -> int:
    """The status of a GET whose extra header line is sent as raw bytes (what urllib would not send)."""
    import socket

    host, port = base.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
                     + header + b"\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def test_loopback_names_and_clamped_sizes() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert is_loopback("127.8.9.10") and is_loopback("app.localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("evil.example")
    assert not is_loopback("localhost.evil.example")
    assert _clamp_int("100000", 80, 1, 500) == 500 and _clamp_int("x", 80, 1, 500) == 80
    assert _clamp_int(True, 24, 1, 200) == 24 and _clamp_int(-3, 24, 1, 200) == 1 and _clamp_int(None, 7, 1, 9) == 7


def test_the_web_package_imports_no_textual_app() -> None:
    code = "import sys, tui.web, tui.cli.web; print('textual' in sys.modules, 'tui.app' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    out = run("web", "--host", "0.0.0.0", "--port", "0", home=tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--token" in out.stderr and "loopback" in out.stderr
    assert "serving" not in out.stderr


@pytest.mark.parametrize("args, says", [
    (("--", "--model", "/nonexistent/model.gguf"), "nonexistent"),
    (("--", "--serve"), "--serve cannot be used with llmtui web"),
    (("--", "serve"), "unrecognized arguments: serve"),
    (("--", "--n-ctx", "99999999"), "--n-ctx"),
])
def test_session_options_are_checked_once_before_serving(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    out = run("web", "--port", "0", *args, home=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr


def test_record_to_one_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "one.jsonl"
    out = run("web", "--port", "0", "--", "--record", str(file), home=tmp_path, timeout=60)
    assert out.returncode == 2 and "takes no FILE" in out.stderr and not file.exists()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """One server for the module: a token, one session at most, short generations."""
    server = WebProcess("--token", TOKEN, "--max-sessions", "1", before=("--max-tokens", "8"),
                        home=tmp_path_factory.mktemp("web-home"))
    yield server
    assert server.stop() == 0


def test_every_request_needs_the_token(token_server: WebProcess) -> None:
    base = token_server.base
    assert token_server.url == f"{base}?token={TOKEN}"  # the address printed carries it
    status, headers, body = get(base)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"] and "token" in body
    assert get(base + "?token=wrong-token-0000000")[0] == 401
    assert get(base + "static/js/textual.js")[0] == 401
    assert get(base, {"Authorization": "Bearer wrong"})[0] == 401
    assert raw_status(base, b"Authorization: Bearer \xff\xfe") == 401  # not UTF-8: refused, not a 500
    assert raw_status(base, f"Cookie: {token_server_cookie(base)}=\xff".encode("latin-1")) == 401
    # the right token once in the address: a cookie, and the token leaves the URL
    status, headers, _ = get(f"{base}?token={TOKEN}&fontsize=20")
    assert status == 303 and headers["Location"] == "/?fontsize=20"
    cookie = headers["Set-Cookie"]
    assert TOKEN in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, page = get(base + "?fontsize=20", {"Cookie": cookie.split(";")[0]})
    assert status == 200 and 'data-font-size="20"' in page and "/ws" in page
    assert "googleapis" not in page and "https://" not in page  # the page fetches nothing from the internet
    assert get(base + "static/js/textual.js", {"Authorization": f"Bearer {TOKEN}"})[0] == 200

    async def websockets() -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_session(base)
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as elsewhere:  # a page from another origin
            await open_session(base, {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
        assert elsewhere.value.status == 403

    asyncio.run(websockets())
    assert token_server.session_pids() == []  # nothing above started a session


def test_one_session_at_most_and_its_process_ends_with_its_socket(token_server: WebProcess) -> None:
    base, auth = token_server.base, {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> int:
        client, ws = await open_session(base, auth)
        try:
            first = await read_until(ws, b"top-10 next tokens")  # the dashboard drew itself
            assert b"top-10 next tokens" in first
            pid = token_server.wait_session(1)
            assert process_alive(pid)
            # a second tab: the page says why, and a socket that raced past the page is told in its terminal
            status, headers, body = get(base, auth)
            assert status == 503 and headers["Retry-After"] == "30"
            assert "--max-sessions 1" in body and "loads the model" in body
            client2, ws2 = await open_session(base, auth)
            told = await read_until(ws2, b"--max-sessions 1", timeout=10)
            assert b"its limit" in told
            assert (await ws2.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws2.close_code == 1013
            await client2.close()
            assert len(token_server.session_pids()) == 1  # the refused one never started a process
            # hostile messages are dropped; the session goes on and still answers
            for bad in ("not json", "[]", '{"a": 1}', '["stdin", 5]', '["resize", {"width": 1e9, "height": "x"}]',
                        '["resize", "big"]', '["ping", ' + json.dumps("x" * 100) + "]", '[1, 2]',
                        "[" * 200_000):  # nested beyond Python's recursion limit
                await ws.send_str(bad)
            await ws.send_str('["ping", "still-here"]')
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        assert json.loads(msg.data) == ["pong", "still-here"]
                        break
            assert process_alive(pid)
        finally:
            await ws.close()  # the tab closes
            await client.close()
        return pid

    pid = asyncio.run(scenario())
    assert token_server.wait_ended(pid) == "quit"  # it exited when asked, within the wait
    assert get(base, {"Authorization": f"Bearer {TOKEN}"})[0] == 200  # the slot is free again


def test_a_loopback_server_without_a_token_answers_only_to_loopback_names(tmp_path: Path) -> None:
    server = WebProcess(home=tmp_path)
    try:
        assert get(server.base)[0] == 200
        status, _, body = get(server.base, {"Host": f"evil.example:{server.base.rsplit(':', 1)[1].strip('/')}"})
        assert status == 403 and "localhost" in body  # a page that rebound its DNS name to 127.0.0.1
        assert get(server.base, {"Host": "[::1"})[0] == 403  # not a host at all: refused, not a 500

        async def cross_site() -> None:
            for origin in ("http://evil.example", "http://[x", "null"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await open_session(server.base, {"Origin": origin})
                assert refused.value.status == 403

        asyncio.run(cross_site())
        assert server.session_pids() == []
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_sessions_end_with_the_server(tmp_path: Path, how: signal.Signals) -> None:
    """SIGTERM: the server ends its sessions and exits 0. SIGKILL: nothing of the server runs, and the
    session must end all the same (PR_SET_PDEATHSIG makes sure of it; its pipes closing usually does too)."""
    server = WebProcess(home=tmp_path)

    async def start() -> tuple[aiohttp.ClientSession, object]:
        client, ws = await open_session(server.base)
        await read_until(ws, b"top-10 next tokens")
        return client, ws

    loop = asyncio.new_event_loop()
    try:
        client, _ws = loop.run_until_complete(start())
        pid = server.wait_session(1)
        server.proc.send_signal(how)
        server.proc.wait(30)
        if how == signal.SIGTERM:
            assert server.proc.returncode == 0
            assert any("every session has ended" in line for line in server.lines)
        deadline = loop.time() + 10
        while process_alive(pid) and loop.time() < deadline:
            loop.run_until_complete(asyncio.sleep(0.1))
        assert not process_alive(pid), f"session {pid} outlived the server ({how.name})"
        loop.run_until_complete(client.close())
    finally:
        loop.close()
        server.stop()


def test_every_key_a_browser_keeps_has_one_that_reaches_the_page() -> None:
    """Chrome never gives a page ctrl+n, ctrl+t or ctrl+w: in llmtui web those bindings answer another key
    too, shown first; a user's own remap stays as it is."""
    from textual.widgets import Input

    from tui.app.keys import BROWSER_KEEPS, all_bindings, web_keymap
    from tui.app.modes import Mode, mode_label

    taken_by_inputs = {k for b in Input.BINDINGS for k in b.key.split(",")}  # the prompt may have the focus

    keymap = web_keymap({})
    kept = {b.id: b.key for b in all_bindings() if b.id and BROWSER_KEEPS & set(b.key.split(","))}
    assert kept, "no binding on a browser's own chord: then WEB_KEYS has nothing to do"
    for binding_id, keys in kept.items():
        assert binding_id in keymap, f"{binding_id} ({keys}) is unreachable in a browser"
        first = keymap[binding_id].split(",")[0]
        assert first not in BROWSER_KEEPS and first not in taken_by_inputs
        assert set(keys.split(",")) <= set(keymap[binding_id].split(","))
    assert mode_label(Mode.LEARN, keymap=keymap) == "LEARN (ctrl+l: leave Learn)"
    assert web_keymap({"session.new": "f6"})["session.new"] == "f6"


def test_a_session_that_dies_at_once_closes_its_tab_saying_so(tmp_path: Path) -> None:
    """The server in this process, with a session command that exits before drawing anything (a crash):
    the tab is not left on "Starting…"."""
    from tui.web import WebOptions, WebServer

    lines: list[str] = []
    crash = "import sys; sys.stderr.write('Traceback: boom'); sys.exit(3)"
    server = WebServer(WebOptions(argv=[sys.executable, "-c", crash], port=0), say=lines.append)

    async def scenario() -> bytes:
        port = await server.start()
        try:
            client, ws = await open_session(f"http://127.0.0.1:{port}/")
            told = await read_until(ws, b"exit status 3", timeout=20)
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await client.close()
            return told
        finally:
            await server.close()

    told = asyncio.run(scenario())
    assert b"ended before it could start" in told
    assert server.ended and server.ended[-1].returncode == 3 and server.ended[-1].how == "exited"
    assert any("session 1 started" in line for line in lines) and not server.sessions
    assert "session 1's last error output: Traceback: boom" in lines  # what it said, in the server's log


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    server = WebProcess(home=tmp_path)
    try:
        port = server.base.rsplit(":", 1)[1].strip("/")
        out = run("web", "--port", port, home=tmp_path, timeout=60)
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("token", ["a+b&c#d;e-long-enough", "short", "", "spaces in a token", "-" * 300])
def test_a_token_is_what_a_url_carries_as_it_is(tmp_path: Path, token: str) -> None:
    out = run("web", "--port", "0", "--token", token, home=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "12 to 256 letters" in out.stderr


# A session that never reads its input, ignores SIGTERM and never exits: what a hung app looks like. It
# lets go of its output once it has said it started, so that a closed pipe cannot end it either.
STUBBORN = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "sys.stdout.write('__GANGLION__\\n'); sys.stdout.flush(); os.close(1); os.close(2); time.sleep(120)")


def sleeping(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` sleeps (the stubborn session has started and let go of its output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "S":
                    return True
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return False


def test_a_session_that_stops_reading_is_ended_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input that a session does not read fills its pipe; the server stops waiting after SEND_WAIT_S, and
    the quit, SIGTERM, SIGKILL steps end even a session that ignores all but the last."""
    from tui.web import WebOptions, WebServer, sessions

    for name, value in (("SEND_WAIT_S", 1.0), ("QUIT_WAIT_S", 0.5), ("TERM_WAIT_S", 0.5)):
        monkeypatch.setattr(sessions, name, value)
    server = WebServer(WebOptions(argv=[sys.executable, "-c", STUBBORN], port=0, max_sessions=1),
                       say=lambda line: None)

    async def scenario() -> float:
        port = await server.start()
        try:
            client, ws = await open_session(f"http://127.0.0.1:{port}/")
            async with asyncio.timeout(10):
                while not server.sessions or next(iter(server.sessions.values())).pid is None:
                    await asyncio.sleep(0.05)
            started = asyncio.get_running_loop().time()
            for _ in range(4):  # 800 KB: far beyond a pipe's 64 KiB
                await ws.send_str(json.dumps(["stdin", "x" * 200_000]))
            async with asyncio.timeout(20):
                while server.sessions or not server.ended:
                    await asyncio.sleep(0.05)
            took = asyncio.get_running_loop().time() - started
            await client.close()
            return took
        finally:
            await server.close()

    took = asyncio.run(scenario())
    (ended,) = server.ended
    assert ended.how == "SIGKILL" and not process_alive(ended.pid)
    assert took < 8, f"the stuck session held its slot for {took:.1f} s"


def test_a_session_dies_with_a_server_killed_outright(tmp_path: Path) -> None:
    """SIGKILL on the server: nothing of it runs to end its sessions, and a session that ignores SIGTERM
    and its closed pipes would run on; PR_SET_PDEATHSIG has the kernel end it."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import asyncio, sys\n"
        "from tui.web import WebOptions, WebServer\n"
        "async def main():\n"
        f"    server = WebServer(WebOptions(argv=[sys.executable, '-c', {STUBBORN!r}], port=0), say=print)\n"
        "    print('PORT', await server.start(), flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])

        async def connect() -> int:
            client, _ws = await open_session(f"http://127.0.0.1:{port}/")
            line = await asyncio.to_thread(proc.stdout.readline)  # "session 1 started (pid N); …"
            await client.close()
            return int(line.split("(pid ")[1].split(")")[0])

        pid = asyncio.run(connect())
        assert sleeping(pid)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(pid), "the session outlived the server killed with SIGKILL"
    finally:
        proc.kill()
        proc.wait(10)


def test_a_remote_server_passes_through_to_every_session(tmp_path: Path) -> None:
    """`llmtui --remote URL web`: no local model is looked for; the page says which server the tabs watch."""
    server = WebProcess(before=("--remote", "http://127.0.0.1:9"), home=tmp_path)
    try:
        status, _, page = get(server.base)
        assert status == 200 and "Starting llmtui on http://127.0.0.1:9" in page
    finally:
        assert server.stop() == 0
