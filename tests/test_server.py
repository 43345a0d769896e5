"""The OpenAI-compatible API on the real SmolLM2 model, driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import llama_pool, real_app, until
from tui.app.widgets.panels import ChainTrace
from tui.app.widgets.token_stream import TokenStream
from tui.engine.controller import StepEvent
from tui.engine.models import describe_file
from tui.record import read_session
from tui.sampling.presets import BUILTIN_PRESETS, load_presets
from tui.server import start_local
from tui.server.service import StopFilter

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(engine, smollm2_path):
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["balanced"], seed=42,
                      port=0, models=lambda: [entry])
    steps: list = []
    srv.controller.emit = lambda ev: steps.append(ev.step) if isinstance(ev, StepEvent) else None
    # steps: what the engine produced, step by step
    yield SimpleNamespace(url=srv.url, controller=srv.controller, service=srv.service, steps=steps,
                          model=entry.name)
    srv.stop()


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def model_id(server) -> str:
    return server.model


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds (polled: the service and the engine run in
    threads of their own that signal nothing a test could wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_lists_the_local_models(server, client) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_id(server)]
    assert models[0].model_extra["loaded"] is True and models[0].model_extra["arch"] == "llama"


def test_chat_non_streaming_and_streaming_give_the_same_text(server, client) -> None:
    full = client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=24, seed=7)
    choice = full.choices[0]
    assert choice.message.role == "assistant" and len(choice.message.content) > 10
    assert choice.finish_reason in ("stop", "length")
    usage = full.usage
    assert usage.completion_tokens >= 1 and usage.prompt_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    timings = usage.model_extra["timings"]
    assert timings["generation_tok_per_s"] > 0 and timings["prompt_ms"] > 0
    parts, finish, streamed_usage = [], None, None
    for chunk in client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=24, seed=7,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            streamed_usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == choice.message.content
    assert finish == choice.finish_reason
    assert streamed_usage.completion_tokens == usage.completion_tokens
    # the same conversation again: its prompt was already in the KV cache (prefix reuse)
    assert streamed_usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
    # another seed samples another story
    other = client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=24, seed=8)
    assert other.choices[0].message.content != choice.message.content


def test_logprobs_equal_the_engine_step_data(server, client) -> None:
    server.steps.clear()
    out = client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=12, seed=3,
                                         logprobs=True, top_logprobs=5)
    content = out.choices[0].logprobs.content
    steps = [s for s in server.steps if not s.is_eog]
    assert len(content) == len(steps) > 0
    piece = server.controller.engine.piece
    for lp, step in zip(content, steps):
        assert bytes(lp.bytes) == step.piece
        assert lp.logprob == pytest.approx(math.log(step.trace.raw_p), abs=1e-9)
        assert len(lp.top_logprobs) == 5
        for top, tid, p in zip(lp.top_logprobs, step.trace.top_ids[:5], step.trace.top_p_before[:5]):
            assert bytes(top.bytes) == piece(int(tid))
            assert top.logprob == pytest.approx(math.log(p), abs=1e-9)
        assert lp.top_logprobs[0].logprob >= lp.top_logprobs[-1].logprob


def test_completion_with_stop_and_logprobs(server, client) -> None:
    out = client.completions.create(model=model_id(server), prompt="The capital of France is", max_tokens=20,
                                    stop=["."], logprobs=2, temperature=0)
    choice = out.choices[0]
    assert "Paris" in choice.text and "." not in choice.text
    assert choice.finish_reason == "stop"
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == len("The capital of France is")  # OpenAI counts from the prompt's start


def _status(exc: pytest.ExceptionInfo) -> tuple[int, dict]:
    return exc.value.status_code, exc.value.body


def test_errors_have_openai_shape_and_status(server, client) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    status, body = _status(exc)
    assert status == 404 and body["code"] == "model_not_found" and body["param"] == "model"
    assert set(body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model_id(server), messages=CHAT, temperature=7)
    status, body = _status(exc)
    assert status == 400 and body["param"] == "temperature" and body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model_id(server), messages=CHAT, logprobs=True, top_logprobs=15)
    assert _status(exc)[1]["param"] == "top_logprobs"
    n_ctx = server.controller.engine.n_ctx
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=model_id(server), prompt="word " * (n_ctx + 10), max_tokens=4)
    status, body = _status(exc)
    assert status == 400 and body["code"] == "context_length_exceeded" and str(n_ctx) in body["message"]
    # and the server still answers
    assert client.completions.create(model=model_id(server), prompt="Hello", max_tokens=3).choices[0].text


def test_api_key_is_required_when_set(engine, smollm2_path) -> None:
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["greedy"], seed=1,
                      port=0, api_key="s3cret")
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as exc:
            c.models.list()
        assert exc.value.status_code == 401 and exc.value.body["code"] == "invalid_api_key"
        with pytest.raises(urllib.error.HTTPError) as http_exc:  # no Authorization header at all
            urllib.request.urlopen(srv.url + "/models", timeout=10)
        assert http_exc.value.code == 401
        assert json.load(http_exc.value)["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0)
        assert [m.id for m in ok.models.list().data] == [entry.name]
    finally:
        srv.stop()


def test_two_concurrent_clients_are_served_one_after_the_other(server, client) -> None:
    answers: dict[int, object] = {}

    def ask(seed: int) -> None:
        answers[seed] = client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=20,
                                                       seed=seed)

    threads = [threading.Thread(target=ask, args=(s,)) for s in (11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(answers) == {11, 12}
    waited = sorted(a.usage.model_extra["timings"]["queue_ms"] for a in answers.values())
    first = min(answers.values(), key=lambda a: a.usage.model_extra["timings"]["queue_ms"])
    # the second waited for (most of) the first one's generation
    assert waited[1] >= 0.5 * first.usage.model_extra["timings"]["generation_ms"]
    for seed, answer in answers.items():  # complete and correct: the same as asking alone
        alone = client.chat.completions.create(model=model_id(server), messages=CHAT, max_tokens=20, seed=seed)
        assert answer.choices[0].message.content == alone.choices[0].message.content


def test_a_dropped_stream_frees_the_engine_within_a_token(server, client) -> None:
    server.steps.clear()
    stream = client.completions.create(model=model_id(server), prompt="1, 2, 3, 4, 5,", max_tokens=400,
                                       stream=True, extra_body={"preset": "greedy"})
    got = 0
    for _ in stream:
        got += 1
        if got == 5:
            break
    at_close = len(server.steps)
    stream.close()
    svc = server.service
    assert wait_for(lambda: not svc.busy)
    assert len(server.steps) - at_close <= 2  # at most the token being generated when it left
    assert len(server.steps) < 100
    # the next request is served at once
    out = client.completions.create(model=model_id(server), prompt="Hello", max_tokens=4)
    assert out.usage.model_extra["timings"]["queue_ms"] < 100


def test_health_reports_the_queue(server) -> None:
    with urllib.request.urlopen(server.url.removesuffix("/v1") + "/health", timeout=10) as r:
        health = json.load(r)
    assert health["status"] == "ok" and health["queue_length"] == 0 and health["served"] >= 1


@given(st.lists(st.text(alphabet="ab.\n", max_size=3), max_size=12),
       st.lists(st.text(alphabet="ab.\n", min_size=1, max_size=3), max_size=2))
def test_stop_filter_never_releases_a_stop_string(pieces: list[str], stops: list[str]) -> None:
    f = StopFilter(stops)
    released = "".join(f.feed(p) for p in pieces)
    text = "".join(pieces)
    assert f.final.startswith(released)
    assert not any(s in f.final for s in stops)
    hits = [text.find(s) for s in stops if s in text]
    assert f.final == (text[:min(hits)] if hits else text)


async def test_a_request_to_the_dashboard_server_shows_up_in_the_token_stream(smollm2_path) -> None:
    entries = [describe_file(smollm2_path, source="embedded")]
    app = real_app(entries, llama_pool(), serve=("127.0.0.1", 0), record="")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.api.server is not None, timeout=30)
        c = openai.OpenAI(base_url=app.api.server.http.url, api_key="x", max_retries=0, timeout=60)
        done: list = []
        thread = threading.Thread(target=lambda: done.append(c.chat.completions.create(
            model=entries[0].name, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16,
            seed=5, extra_body={"preset": "precise"})))
        thread.start()
        await until(pilot, lambda: bool(done), timeout=60)
        thread.join()
        await until(pilot, lambda: app.current.state_text.startswith("API #1 stopped"), timeout=10)
        stream = app.query_one(TokenStream)
        answer = done[0].choices[0].message.content
        assert stream.text() == answer
        assert "Name a colour." in stream.prompt()
        assert len(app.current.steps) == done[0].usage.completion_tokens
        trace = app.query_one(ChainTrace)
        lines = trace._build(80) if trace._build else []
        assert "chain: precise" in "".join(text for text, _ in lines[0])  # the request's preset, not the app's
        assert f"API :{app.api.server.http.port} (1 request)" in app.query_one("#status").text
        # recorded like any session: the conversation as the prompt, every step
        session = read_session(Path(app.current.record_path))
        assert "Name a colour." in session.header["prompt"]
        assert "".join(s.text for s in session.steps) == answer


def test_cli_serve_starts_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "LLMTUI_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "PYTHONFAULTHANDLER": "1"}  # a hang at exit shows every thread's stack (SIGABRT below)
    # started with SIGINT ignored, as a shell starts a background job: Ctrl+C must still stop it (it did not)
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "serve", "--port", "0", "--n-ctx", "512"],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stderr.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split(";")[0].strip()
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
        assert c.completions.create(model=c.models.list().data[0].id, prompt="Hi", max_tokens=2).choices
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            raise AssertionError(f"serve did not stop on SIGINT:\n{proc.communicate(timeout=10)[1][-4000:]}") from None
        assert code == 0


async def test_S_toggles_the_server_and_a_taken_port_is_a_one_line_error() -> None:
    import socket

    from tests.conftest import make_app, ready

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        app.api.serve_at = ("127.0.0.1", 0)
        await pilot.press("S")
        assert app.api.server is not None
        url = app.api.server.http.url
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as r:
            assert json.load(r)["model"] == app.model_label
        await pilot.press("S")
        assert app.api.server is None
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            app.api.serve_at = ("127.0.0.1", taken.getsockname()[1])
            await pilot.press("S")  # the action runs (and fails) before press returns
            assert app.api.server is None
            assert any("could not listen" in str(n.message) for n in app._notifications)
        # the dashboard goes on: a local generation still runs
        app.start_generation("the cat")
        await until(pilot, lambda: app.current.state_text.startswith("stopped"))


def test_a_client_that_leaves_a_non_streaming_request_stops_its_generation(server) -> None:
    host, port = server.url.removeprefix("http://").removesuffix("/v1").split(":")
    server.steps.clear()
    body = json.dumps({"model": model_id(server), "prompt": "1, 2, 3, 4, 5,", "max_tokens": 500,
                       "preset": "greedy"})
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    assert wait_for(lambda: len(server.steps) >= 5, timeout=30)  # it is generating
    conn.sock.close()  # gone without reading the answer
    conn.close()
    svc = server.service
    assert wait_for(lambda: not svc.busy, timeout=5)  # noticed within the 0.5 s poll, long before 500 tokens
    assert len(server.steps) < 200, len(server.steps)


def test_closing_answers_every_waiting_request() -> None:
    from tui.server import GenRequest, Service
    from tui.server.service import ApiError

    release = threading.Event()
    service = Service(lambda: release.wait(10) and None).start()  # the first job holds the worker
    got: dict[int, list] = {}
    req = GenRequest(kind="completion", model="m", preset=BUILTIN_PRESETS["greedy"], seed=1, max_tokens=1,
                     prompt="hi")
    jobs = [service.submit(req, lambda item, i=i: got.setdefault(i, []).append(item)) for i in range(4)]
    assert wait_for(lambda: service.busy)  # the worker holds the first job; the other three wait
    closing = threading.Thread(target=service.close)
    closing.start()
    # answered while the first job still holds the worker: close() does not wait for it to finish
    assert wait_for(lambda: all(got.get(i) for i in range(1, 4)))
    release.set()
    closing.join(10)
    assert not closing.is_alive()
    for i in range(1, 4):  # the waiting ones: a 503 each, their generation cancelled
        assert isinstance(got[i][0], ApiError) and got[i][0].status == 503 and jobs[i].cancel.is_set()


async def test_a_request_without_preset_uses_the_dashboards_current_one() -> None:
    from tests.conftest import make_app, ready

    app = make_app(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("plus")  # balanced → "balanced T=0.8": a preset the catalog has no name for
        assert app.preset.name == "balanced T=0.8"
        app.api.serve_at = ("127.0.0.1", 0)
        app.api.start()
        c = openai.OpenAI(base_url=app.api.server.http.url, api_key="x", max_retries=0, timeout=30)
        out = await asyncio.to_thread(lambda: c.completions.create(model=app.model_label, prompt="the cat",
                                                                   max_tokens=4))
        assert out.system_fingerprint.startswith("llmtui-balanced T=0.8")
        await until(pilot, lambda: app.current.state_text.startswith("API #1 stopped"))
        app.api.stop()


# -- untrusted input: body limit, auth before parsing, error shapes, bad values, logged 500s ---------------

LIMIT = 64 * 1024


def _call(url: str, method: str, path: str, body: Any = None, headers: dict | None = None,
          ) -> tuple[int, dict, dict]:
    """One raw request: (status, JSON body, headers)."""
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers={**sent, **(headers or {})})
        r = conn.getresponse()
        return r.status, json.loads(r.read()), dict(r.getheaders())
    finally:
        conn.close()


def _openai_error(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def _head_only(url: str, path: str, headers: dict) -> tuple[int, dict]:
    """Send only the head of a request that announces a 120 MB body, and read the answer: a server that
    waited for the body would time out."""
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("POST", path)
        for name, value in {"Content-Type": "application/json", "Content-Length": "120000000", **headers}.items():
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def guarded(engine, smollm2_path):
    """A server with an API key and a small body limit."""
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["greedy"], seed=1,
                      port=0, api_key="s3cret", max_body_bytes=LIMIT)
    yield SimpleNamespace(url=srv.url, model=entry.name, key={"Authorization": "Bearer s3cret"})
    srv.stop()


def test_a_body_over_the_limit_is_refused_before_it_is_read(guarded) -> None:
    status, body = _head_only(guarded.url, "/v1/completions", guarded.key)  # at once, from the Content-Length
    error = _openai_error(body)
    assert status == 413 and error["code"] == "request_too_large" and str(LIMIT) in error["message"]
    # chunked: no Content-Length, refused once the bytes received pass the limit
    chunks = (b"x" * 8192 for _ in range(4 * LIMIT // 8192))
    status, body, _ = _call(guarded.url, "POST", "/v1/completions", chunks, guarded.key)  # http.client chunks it
    assert status == 413 and _openai_error(body)["code"] == "request_too_large"
    # a body under the limit is served
    small = json.dumps({"model": guarded.model, "prompt": "Hi", "max_tokens": 1, "padding": "x" * (LIMIT // 2)})
    status, body, _ = _call(guarded.url, "POST", "/v1/completions", small, guarded.key)
    assert status == 200 and body["usage"]["completion_tokens"] == 1


def test_the_api_key_is_checked_before_the_body_is_read(guarded) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, body, got = _call(guarded.url, "POST", "/v1/chat/completions", "{not json", headers)
        assert status == 401 and _openai_error(body)["code"] == "invalid_api_key", body  # not 400
        assert got["www-authenticate"] == "Bearer"
    status, body = _head_only(guarded.url, "/v1/chat/completions", {})
    assert status == 401 and _openai_error(body)["code"] == "invalid_api_key"  # not 413, and without waiting
    status, body, _ = _call(guarded.url, "POST", "/v1/chat/completions", "{not json", guarded.key)
    assert status == 400 and _openai_error(body)["code"] == "invalid_json"
    # open without the key: the health check and the (public) schema
    assert _call(guarded.url, "GET", "/health")[0] == 200
    status, schema, _ = _call(guarded.url, "GET", "/openapi.json")
    assert status == 200 and "/v1/chat/completions" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_the_frameworks_own_errors_have_openai_shape(server) -> None:
    for method in ("GET", "OPTIONS"):
        status, body, headers = _call(server.url, method, "/v1/chat/completions")
        error = _openai_error(body)
        assert status == 405 and error["code"] == "method_not_allowed" and headers["allow"] == "POST"
        assert method in error["message"]
    status, body, _ = _call(server.url, "GET", "/v1/nothing-here")
    assert status == 404 and _openai_error(body)["code"] == "not_found"
    status, body, _ = _call(server.url, "POST", "/v1/chat/completions", '{"model": "x", "messages": [')
    error = _openai_error(body)
    assert status == 400 and error["code"] == "invalid_json" and "not valid JSON" in error["message"]
    chat = json.dumps({"model": model_id(server), "messages": CHAT, "max_tokens": 1})
    status, body, _ = _call(server.url, "POST", "/v1/chat/completions", chat, {"Content-Type": "text/plain"})
    error = _openai_error(body)
    assert status == 400 and error["code"] == "invalid_content_type" and "application/json" in error["message"]
    status, body, _ = _call(server.url, "POST", "/v1/chat/completions",
                            json.dumps({"model": model_id(server), "messages": [{"role": "user", "content": 5}]}))
    assert status == 400 and _openai_error(body)["param"] == "messages[0].content"
    status, schema, _ = _call(server.url, "GET", "/openapi.json")
    assert status == 200 and set(schema["paths"]) == {"/health", "/metrics", "/v1/models", "/v1/models/{model_id}",
                                                      "/tokenizer_info", "/tokenize", "/detokenize", "/v1/responses",
                                                      "/v1/completions",
                                                      "/v1/chat/completions"}


def test_a_lone_surrogate_is_a_400_naming_the_field(server) -> None:
    model = json.dumps(model_id(server))
    cases = {  # JSON's \ud800 escape parses into a str that has no UTF-8 form
        "prompt": f'{{"model": {model}, "prompt": "a\\ud800b", "max_tokens": 1}}',
        "stop": f'{{"model": {model}, "prompt": "Hi", "stop": ["\\udfff"], "max_tokens": 1}}',
        "preset": f'{{"model": {model}, "prompt": "Hi", "preset": "\\ud800", "max_tokens": 1}}',
        "model": '{"model": "\\ud800", "prompt": "Hi", "max_tokens": 1}',
        "messages[1].content": f'{{"model": {model}, "messages": [{{"role": "system", "content": "Be brief."}}, '
                               f'{{"role": "user", "content": [{{"type": "text", "text": "\\ud83d"}}]}}]}}',
    }
    for param, body in cases.items():
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        status, answer, _ = _call(server.url, "POST", path, body)
        error = _openai_error(answer)
        assert status == 400 and error["param"] == param and "surrogate" in error["message"], (param, answer)
    # a surrogate pair is one ordinary character
    pair = f'{{"model": {model}, "prompt": "\\ud83d\\ude00", "max_tokens": 1}}'
    assert _call(server.url, "POST", "/v1/completions", pair)[0] == 200


def test_nan_and_infinity_are_400(server) -> None:
    model = json.dumps(model_id(server))
    for field, value in (("temperature", "NaN"), ("repeat_penalty", "Infinity"), ("top_p", "-Infinity")):
        body = f'{{"model": {model}, "prompt": "Hi", "max_tokens": 1, "{field}": {value}}}'
        status, answer, _ = _call(server.url, "POST", "/v1/completions", body)
        assert status == 400 and _openai_error(answer)["param"] == field, (field, answer)


def test_a_500_is_logged_with_its_traceback_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from tui.engine.loop import StopReason
    from tui.server import Service
    from tui.server.http import ServerConfig, ServerThread, create_app

    def bug(prompt: str, **kw: object) -> object:
        raise RuntimeError("a bug in run")

    def engine_failure(prompt: str, **kw: object) -> object:
        return SimpleNamespace(stop_reason=StopReason.ERROR, error="llama_decode returned -3")

    controller = SimpleNamespace(engine=SimpleNamespace(n_ctx=64, tokenize=lambda text, **kw: [1, 2]), run=bug)
    # the worker calls run directly (no engine thread: there is no engine)
    service = Service(lambda: controller, call=lambda fn, *a, **kw: fn(*a, **kw)).start()
    entry = SimpleNamespace(name="m", path="/models/m.gguf", usable=True)

    def models() -> list:
        raise ValueError("a bug in the web layer")

    config = ServerConfig(catalog=load_presets(None), loaded=lambda: entry, models=lambda: [entry])
    thread = ServerThread(create_app(service, config), "127.0.0.1", 0).start()
    caplog.set_level(logging.ERROR, logger="llmtui.server")

    def logged() -> logging.LogRecord:
        return [r for r in caplog.records if r.name == "llmtui.server"][-1]

    try:
        request = json.dumps({"model": "m", "prompt": "Hi", "max_tokens": 1})
        status, body, _ = _call(thread.url, "POST", "/v1/completions", request)
        assert status == 500 and "RuntimeError: a bug in run" in _openai_error(body)["message"]
        assert logged().exc_info and logged().exc_info[0] is RuntimeError
        controller.run = engine_failure
        status, body, _ = _call(thread.url, "POST", "/v1/completions", request)
        assert status == 500 and "llama_decode returned -3" in _openai_error(body)["message"]  # the engine's word
        assert "llama_decode returned -3" in logged().getMessage()
        config.models = models
        status, body, _ = _call(thread.url, "GET", "/v1/models")  # an exception in a route
        error = _openai_error(body)
        assert status == 500 and error["type"] == "server_error" and "ValueError" in error["message"]
        assert logged().exc_info[0] is ValueError
        text = logging.Formatter().format(logged())
        assert "Traceback" in text and "a bug in the web layer" in text
    finally:
        thread.stop()
        service.close()
