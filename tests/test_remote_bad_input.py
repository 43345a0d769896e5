"""Bad input from remote servers (issue: "unreachable URL, refused connection, wrong key, a server without
logprobs support, a server that dies mid-stream, a slow server, an HTML error page → one clear line in the
status bar or CLI, and the app keeps running").

Every case at three levels: the library (``tui.remote.connect`` and a :class:`RemoteController` run), the
CLI (``llmtui generate --remote``, a subprocess) and the dashboard (Pilot). The misbehaving servers are
``tests/remote_fakes.py``'s, one stdlib HTTP server on 127.0.0.1; the wrong key is also tried on llmtui's
own server on the real model. Clients wait 1 s for a slow server.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.widgets import Input

from tests.conftest import until
from tests.remote_fakes import ESC, TOKENS, UNREACHABLE, FakeServers, fake_servers, refused_url
from tui.engine import EngineSettings
from tui.engine.controller import Finished, StepEvent
from tui.engine.errors import EngineError
from tui.engine.loop import StopReason
from tui.remote import RemoteError, connect, normalise_url, safe_url
from tui.remote.entries import Remotes, RemoteSpec
from tui.remote.controller import RemoteController
from tui.remote.source import RemoteEngine
from tui.sampling.presets import BUILTIN_PRESETS, load_presets

TIMEOUT = 1.0  # seconds a client waits here for a server that does not answer (the slow ones wait 3 s)
KEY = "sk-wrong-4f9a"  # an API key: never on screen, never in a message
PASSWORD = "hunter2"  # a password in a URL: the same


@pytest.fixture(scope="module")
def servers() -> Iterator[FakeServers]:
    with fake_servers() as httpd:
        yield httpd


@pytest.fixture(scope="module")
def real_server(engine, smollm2_path):
    """llmtui's own API on the real model, behind the key "right"."""
    from tui.engine.models import describe_file
    from tui.server import start_local

    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["greedy"], seed=1,
                      port=0, api_key="right", max_tokens=4)
    try:
        yield SimpleNamespace(url=srv.url)
    finally:
        srv.stop()


def url_of(servers: FakeServers, case: str) -> str:
    """The base URL of a bad-input case."""
    if case == "refused":
        return refused_url()
    if case == "unreachable":
        return UNREACHABLE
    return servers.url(case)


def assert_one_line(message: object, url: str) -> str:
    """``message`` is one printable line that names the server (without credentials) and holds no raw
    control character from what the server sent."""
    text = str(message)
    assert text and text == text.strip(), repr(text)
    assert text.isprintable(), f"a control character in {text!r}"  # no "\n", "\r", ESC...
    assert ESC not in text and "\x1b" not in text, repr(text)
    assert safe_url(normalise_url(url)) in text, f"the server's address is not in {text!r}"
    assert PASSWORD not in text and KEY not in text, repr(text)
    return text


def with_password(url: str) -> str:
    return url.replace("http://", f"http://user:{PASSWORD}@", 1)


# -- 1. the library ------------------------------------------------------------------------------------------

# a server that cannot be attached: the kind of its RemoteError, and words the line must hold
ATTACH_FAILS = {
    "refused": ("refused", "refused"),
    "unreachable": ("unreachable", "resolve"),
    "auth": ("auth", "API key"),
    "html": ("html", "HTML"),  # a proxy's 502 error page
    "slow": ("timeout", f"{TIMEOUT:g} s"),
}


@pytest.mark.parametrize("case", list(ATTACH_FAILS))
@pytest.mark.parametrize("backend", ["auto", "openai"])
def test_connect_fails_with_one_line_of_the_right_kind(servers, case: str, backend: str) -> None:
    url = with_password(url_of(servers, case))
    kind, words = ATTACH_FAILS[case]
    with pytest.raises(RemoteError) as caught:
        connect(url, api_key=KEY, backend=backend, timeout=TIMEOUT)
    assert type(caught.value) is RemoteError
    line = assert_one_line(caught.value, url)
    assert caught.value.kind == kind, f"{case} with backend={backend}: kind {caught.value.kind!r}: {line}"
    assert words in line


def test_a_web_page_where_the_api_should_be_is_one_line(servers) -> None:
    """200 with an HTML page (a web UI's address): not an inference server, said in one line."""
    url = servers.url("webui")
    with pytest.raises(RemoteError) as caught:
        connect(url, timeout=TIMEOUT)
    assert_one_line(caught.value, url)
    assert caught.value.kind in ("html", "unknown")
    with pytest.raises(RemoteError) as told:
        connect(url, backend="openai", timeout=TIMEOUT)
    assert told.value.kind == "html" and "HTML" in assert_one_line(told.value, url)


def test_the_servers_error_text_reaches_the_line_with_its_controls_made_visible(servers) -> None:
    with pytest.raises(RemoteError) as caught:
        connect(servers.url("auth"), api_key=KEY, timeout=TIMEOUT)
    line = str(caught.value)
    assert "Incorrect API key provided ␛[31m" in line and caught.value.status == 401
    with pytest.raises(RemoteError) as page:
        connect(servers.url("html"), backend="openai", timeout=TIMEOUT)
    assert "502" in str(page.value) and "␛[31m" in str(page.value)  # the proxy's reason phrase, made visible


def test_a_remotes_load_turns_every_failure_into_an_engine_error_of_one_line(servers) -> None:
    for case in ATTACH_FAILS:
        url = url_of(servers, case)
        remotes = Remotes([RemoteSpec(url, KEY)], timeout=TIMEOUT)
        with pytest.raises(EngineError) as caught:
            remotes.load(remotes.entries()[0])
        assert_one_line(caught.value, url)
        assert not remotes.backends  # the next try detects again


def test_the_key_is_sent_and_a_wrong_one_is_told_apart_on_a_real_server(real_server) -> None:
    with pytest.raises(RemoteError) as caught:
        connect(real_server.url, api_key=KEY, timeout=10)
    assert caught.value.kind == "auth" and caught.value.status == 401
    assert "API key" in assert_one_line(caught.value, real_server.url)
    with pytest.raises(RemoteError) as missing:
        connect(real_server.url, timeout=10)
    assert missing.value.kind == "auth"
    assert connect(real_server.url, api_key="right", timeout=10).info().model  # the key was the only fault


def run_remote(url: str, *, max_tokens: int = 8) -> tuple[list[object], Any, RemoteEngine]:
    engine = RemoteEngine(connect(url, timeout=TIMEOUT))
    events: list[object] = []
    controller = RemoteController(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=events.append,
                                  max_tokens=max_tokens)
    stats = controller.run("x")
    return events, stats, engine


# a server that fails after its stream started: the tokens that came first, and words the line must hold
STREAM_FAILS = {
    "dies": (TOKENS, "mid-answer"),  # the connection drops between two chunks
    "reset": (TOKENS, "mid-answer"),  # a TCP reset after them
    "ends": (TOKENS, "mid-answer"),  # closed cleanly, but before finish_reason / [DONE]
    "oom": (TOKENS, "out of memory"),  # an error event in the stream
    "stall": (TOKENS[:1], f"{TIMEOUT:g} s"),  # a token, then silence
}


@pytest.mark.parametrize("case", list(STREAM_FAILS))
def test_a_stream_that_fails_midway_finishes_with_an_error_after_its_tokens(servers, case: str) -> None:
    url = servers.url(case)
    tokens, words = STREAM_FAILS[case]
    events, stats, _engine = run_remote(url)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert [s.text for s in steps] == list(tokens)
    assert all(math.isclose(s.prob, math.exp(-0.25), rel_tol=1e-6) for s in steps)  # the server's, as sent
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and events[-1] is finished[0]
    assert finished[0].reason is StopReason.ERROR and stats.stop_reason is StopReason.ERROR
    line = assert_one_line(finished[0].error, url)
    assert words in line and stats.error == finished[0].error
    assert finished[0].text == "".join(tokens)


def test_a_server_without_logprobs_streams_text_with_no_invented_figures(servers) -> None:
    url = servers.url("nolp")
    before = len(servers.seen("nolp"))
    events, stats, engine = run_remote(url)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert [s.text for s in steps] == list(TOKENS) and stats.stop_reason is StopReason.MAX_TOKENS
    for step in steps:
        assert math.isnan(step.prob) and math.isnan(step.trace.entropy)  # not known, never a number
        assert len(step.trace.top_ids) == 0 and len(step.trace.top_p_before) == 0
    asked = [body.get("logprobs") for method, path, body, _ in servers.seen("nolp")[before:]
             if method == "POST" and isinstance(body, dict)]
    assert asked[0] and asked[-1] is None  # asked with logprobs, was refused, asked without
    backend = engine.backend
    assert backend.info().max_top_k == 0 and not backend.info().exposes["logprobs"]
    assert "logprobs are not supported" in assert_one_line(backend.refused_logprobs, url)


def test_what_the_engine_says_of_the_server_is_updated_once_it_refused_logprobs(servers) -> None:
    """The engine's view of the server (recordings' headers, the status line, generate --json's summary)
    must not keep saying "logprobs: exposed" after the server refused them."""
    _events, _stats, engine = run_remote(servers.url("nolp"))
    assert engine.remote.max_top_k == 0 and not engine.remote.exposes["logprobs"], engine.remote


# -- 2. the CLI ----------------------------------------------------------------------------------------------

def generate(url: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMTUI_HOME": str(home), "HF_HUB_CACHE": str(home / "hf")}
    env.pop("LLMTUI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "generate", "hi", "--remote", url,
                           "--remote-timeout", f"{TIMEOUT:g}", "--raw", "--max-tokens", "8", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def assert_cli_error(result: subprocess.CompletedProcess[str], url: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    line = result.stderr[:-1]
    assert line.startswith("llmtui: error: "), line
    return assert_one_line(line[len("llmtui: error: "):], url)


@pytest.mark.parametrize("case", list(ATTACH_FAILS))
def test_cli_a_server_that_cannot_be_attached_is_one_line_and_exit_2(servers, tmp_path: Path, case: str) -> None:
    url = with_password(url_of(servers, case))
    result = generate(url, "--api-key", KEY, home=tmp_path)
    line = assert_cli_error(result, url)
    assert ATTACH_FAILS[case][1] in line
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(STREAM_FAILS))
def test_cli_a_stream_that_fails_midway_prints_its_tokens_then_one_line(servers, tmp_path: Path,
                                                                        case: str) -> None:
    url = servers.url(case)
    tokens, words = STREAM_FAILS[case]
    result = generate(url, home=tmp_path)
    assert words in assert_cli_error(result, url)
    assert result.stdout == "".join(tokens) + "\n"


def test_cli_a_wrong_key_on_a_real_server_is_one_line(real_server, tmp_path: Path) -> None:
    line = assert_cli_error(generate(real_server.url, "--api-key", KEY, home=tmp_path), real_server.url)
    assert "401" in line and "API key" in line


def test_cli_a_server_without_logprobs_prints_the_text_and_nulls(servers, tmp_path: Path) -> None:
    url = servers.url("nolp")
    plain = generate(url, home=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "".join(TOKENS) + "\n"
    result = generate(url, "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    *steps, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["text"] for s in steps] == list(TOKENS)
    for step in steps:
        assert step["prob"] is None and step["entropy"] is None  # not known: null, never a number
        assert step["top"] == {"token": [], "piece": [], "logit": [], "p": [], "p_after": []}
        assert step["stages"] == [] and step["draw"] is None
    assert summary["summary"]["stop_reason"] == "max_tokens" and summary["summary"]["error"] is None


def test_cli_a_server_without_logprobs_says_so_in_one_line(servers, tmp_path: Path) -> None:
    """The run goes on without probabilities: stderr says why in one line, and the summary does not claim
    the server exposes logprobs."""
    url = servers.url("nolp")
    result = generate(url, "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    remote = json.loads(result.stdout.splitlines()[-1])["summary"]["remote"]
    assert remote["max_top_k"] == 0 and remote["exposed"]["logprobs"] is False, remote
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and "logprob" in warnings[0], result.stderr
    assert_one_line(warnings[0], url)


# -- 3. the dashboard ------------------------------------------------------------------------------------

def remote_app(url: str, api_key: str | None = None):
    """The dashboard as ``llmtui --remote URL --raw --remote-timeout 1`` builds it."""
    from tui.app.app import LlmTuiApp

    remotes = Remotes([RemoteSpec(url, api_key, "auto")], timeout=TIMEOUT)
    entry = remotes.entries()[0]
    return LlmTuiApp(load=lambda e, progress: remotes.load(e), entry=entry, model_label=entry.name,
                     settings=EngineSettings(n_ctx=512, seed=1), preset=BUILTIN_PRESETS["greedy"],
                     catalog=load_presets(None), max_tokens=8, live_metrics=False, chat=False, remotes=remotes)


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def still_responds(pilot) -> None:
    """The app runs on: a key opens the help screen and escape closes it."""
    app = pilot.app
    from tui.app.widgets.token_stream import TokenStream

    app.query_one(TokenStream).focus()
    await pilot.press("question_mark")
    await until(pilot, lambda: len(app.screen_stack) == 2, timeout=3)
    assert type(app.screen).__name__ == "HelpScreen"
    await pilot.press("escape")
    await until(pilot, lambda: len(app.screen_stack) == 1, timeout=3)
    assert app.is_running and app.screen is app.dashboard


@pytest.mark.parametrize("case", list(ATTACH_FAILS))
async def test_app_a_server_that_cannot_be_attached_shows_one_error_line_and_runs_on(servers, case: str) -> None:
    url = with_password(url_of(servers, case))
    app = remote_app(url, KEY)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, app.engine_settled.is_set, timeout=10)
        state = app.dashboard.model.state_text
        assert state.startswith("error: "), state
        line = assert_one_line(state[len("error: "):], url)
        assert ATTACH_FAILS[case][1] in line
        status = app.query_one("#status").text
        assert status.startswith(state + " │ "), status
        assert KEY not in status and PASSWORD not in status and "\x1b" not in status
        shown = [n for n in notices(app) if n == line]
        assert shown, notices(app)  # the same line, as a notification
        assert app.controller is None and app.engine is None
        await still_responds(pilot)


async def test_app_enter_after_a_failed_attach_says_why_not_still_loading(servers) -> None:
    app = remote_app(refused_url())
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, app.engine_settled.is_set, timeout=10)
        prompt = app.query_one("#prompt", Input)
        prompt.value = "hello"
        prompt.focus()
        await pilot.press("enter")
        await until(pilot, lambda: len(notices(app)) >= 2, timeout=3)
        assert app.is_running and app.dashboard.model.state_text.startswith("error: ")
        assert "still loading" not in notices(app)[-1], notices(app)[-1]  # it failed: loading is over


async def test_app_wrong_key_on_a_real_server(real_server) -> None:
    app = remote_app(real_server.url, KEY)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, app.engine_settled.is_set, timeout=10)
        state = app.dashboard.model.state_text
        assert state.startswith("error: ") and "API key" in assert_one_line(state[len("error: "):], real_server.url)
        await still_responds(pilot)


async def run_prompt(pilot, prompt: str = "x") -> None:
    app = pilot.app
    await until(pilot, lambda: app.controller is not None, timeout=10)
    box = app.query_one("#prompt", Input)
    box.value = prompt
    box.focus()
    await pilot.press("enter")
    await until(pilot, lambda: app.current.run_id and not app.running
                and app.current.state_text.startswith("stopped"), timeout=10)


@pytest.mark.parametrize("case", ["dies", "oom", "stall"])
async def test_app_a_stream_that_fails_midway_keeps_its_tokens_and_shows_the_line(servers, case: str) -> None:
    from tui.app.widgets.token_stream import TokenStream

    url = servers.url(case)
    tokens, words = STREAM_FAILS[case]
    app = remote_app(url)
    async with app.run_test(size=(160, 40)) as pilot:
        await run_prompt(pilot)
        state = app.current.state_text
        assert state.startswith("stopped: error (") and state.endswith(")"), state
        line = assert_one_line(state[len("stopped: error ("):-1], url)
        assert words in line
        assert app.query_one("#status").text.startswith(state)
        assert app.query_one(TokenStream).text() == "".join(tokens)
        assert line in notices(app)
        await still_responds(pilot)


async def test_app_a_server_without_logprobs_streams_and_says_so(servers) -> None:
    from tui.app.widgets.token_stream import TokenStream

    app = remote_app(servers.url("nolp"))
    async with app.run_test(size=(160, 40)) as pilot:
        await run_prompt(pilot)
        assert app.current.state_text == "stopped: max tokens reached", app.current.state_text
        assert app.query_one(TokenStream).text() == "".join(TOKENS)
        assert all(math.isnan(s.prob) for s in app.current.steps)
        await still_responds(pilot)
        said = [n for n in notices(app) if "logprob" in n]
        assert len(said) == 1, notices(app)  # the server refused logprobs: one line says the numbers are missing
        before = app.current.run_id
        await run_prompt(pilot)
        await until(pilot, lambda: app.current.run_id > before and not app.running
                    and app.current.state_text.startswith("stopped"), timeout=10)
        assert len([n for n in notices(app) if "logprob" in n]) == 1  # said once, not on every run
