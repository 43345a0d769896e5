"""What a hostile or broken server can send, and what llmtui does with it: values out of range are refused
where they enter, a run always ends with one line (never another exception), Esc stops a stalled stream at
once, and the fleet view's poll is not held by one slow server."""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tui.engine.controller import Finished, StepEvent
from tui.engine.errors import EngineError
from tui.engine.loop import StopReason
from tui.remote.backend import Backend, Candidate, MetricsSample, RemoteDone, RemoteInfo, RemoteToken, Request
from tui.remote.entries import Remotes, RemoteSpec
from tui.remote.http import Endpoint, RemoteError
from tui.remote.ollama import _release
from tui.remote.parse import as_count, as_logprob, as_prob_logprob, token_piece
from tui.remote.controller import RemoteController, ServerCounters
from tui.remote.source import TEXT_IDS, RemoteEngine, RemoteVocab
from tui.sampling.presets import BUILTIN_PRESETS


def test_values_out_of_range_are_not_taken() -> None:
    assert as_logprob(800) is None and as_logprob(float("nan")) is None and as_logprob("-1") is None
    assert as_logprob(-0.5) == -0.5 and as_logprob(float("-inf")) == -math.inf and as_logprob(1e-6) == 0.0
    assert as_prob_logprob(5) is None and as_prob_logprob(float("nan")) is None and as_prob_logprob(-0.1) is None
    assert as_prob_logprob(0.5) == pytest.approx(math.log(0.5)) and as_prob_logprob(0) == -math.inf
    assert as_count(2**63) is None and as_count(-1) is None and as_count(True) is None and as_count(7) == 7
    assert token_piece("token_id:²") == ("token_id:²", "token_id:²".encode())  # not a number: kept as text
    assert token_piece("token_id:12") == (12, b"")
    assert _release("0.²") is None and _release("0.12.11") == (0, 12, 11)


def test_token_ids_outside_the_vocabulary_are_refused_where_they_enter() -> None:
    vocab = RemoteVocab(token_ids=True, n_vocab=100, where="http://x")
    assert vocab.id_of(5, b"a") == 5
    for bad in (100, 10**9, -1):
        with pytest.raises(RemoteError, match=r"http://x named token id .* outside its vocabulary") as err:
            vocab.id_of(bad, b"")
        assert err.value.kind == "bad-json"
    assert vocab.id_of("some text", b"t") >= TEXT_IDS  # a key by text never collides with the server's ids
    assert vocab.n_vocab == 100  # ... nor grows the chain's array


class Fake(Backend):
    """A backend scripted in the test: what it streams, and what it says about itself."""

    name = "openai"

    def __init__(self, items: list[Any], *, top_k: int = 5, token_ids: bool = False, n_vocab: int | None = None,
                 fail: RemoteError | None = None, refuse_after_first: bool = False) -> None:
        super().__init__(Endpoint("http://127.0.0.1:9"))
        self.items, self.fail, self.refuse = items, fail, refuse_after_first
        self._info = RemoteInfo(backend="openai", url="http://127.0.0.1:9", model="m", n_vocab=n_vocab,
                                max_top_k=top_k, token_ids=token_ids,
                                exposes={"logprobs": top_k > 0, "top_k": top_k > 0})

    def info(self) -> RemoteInfo:
        return self._info

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        if self.refuse:  # as OpenAIBackend does on a 400 about logprobs: info changes, the run goes on
            self._info = RemoteInfo(backend="openai", url=self._info.url, model="m", max_top_k=0,
                                    exposes={"logprobs": False})
        yield from self.items
        if self.fail is not None:
            raise self.fail


def token(key: Any, text: str, lp: float | None = -0.1, top: tuple[Candidate, ...] = ()) -> RemoteToken:
    return RemoteToken(key, text.encode(), text, lp, top)


def run(backend: Backend, max_tokens: int = 8) -> tuple[Any, list[Any], RemoteController]:
    events: list[Any] = []
    ctl = RemoteController(RemoteEngine(backend), BUILTIN_PRESETS["greedy"], seed=1, emit=events.append,
                           max_tokens=max_tokens)
    return ctl.run("hi"), events, ctl


def finished(events: list[Any]) -> Finished:
    (end,) = [e for e in events if isinstance(e, Finished)]
    return end


def test_an_id_beyond_the_vocabulary_ends_the_run_in_one_line() -> None:
    stats, events, _ = run(Fake([token(3, "a"), token(10**9, "b")], token_ids=True, n_vocab=100))
    end = finished(events)
    assert end.reason is StopReason.ERROR and "token id 1000000000" in end.error and "\n" not in end.error
    assert end.text == "a" and stats.generated == 1  # what arrived stays


def test_a_refusal_then_a_death_mid_stream_is_one_error_and_the_refusal_is_said_once() -> None:
    dead = RemoteError("http://127.0.0.1:9/v1/completions broke off the stream mid-answer", kind="died")
    _, events, ctl = run(Fake([token(None, "x", None)], fail=dead, refuse_after_first=True))
    end = finished(events)
    assert end.reason is StopReason.ERROR and "broke off" in end.error
    notes = [e.note for e in events if isinstance(e, ServerCounters) and e.note]
    assert len(notes) == 1 and "returns no logprobs" in notes[0]
    assert ctl.engine.remote.max_top_k == 0  # the engine follows what the server showed
    # the next run says nothing new
    ctl.engine.backend.fail = None
    ctl.engine.backend.items = [token(None, "y", None), RemoteDone("stop")]
    events.clear()
    ctl.run("again")
    assert not [e for e in events if isinstance(e, ServerCounters) and e.note]


def test_stop_reasons_and_unknown_prompt_counts_are_the_servers_word() -> None:
    for finish, reason in (("stop", StopReason.EOG), ("length", StopReason.MAX_TOKENS), ("word", StopReason.EOG)):
        _, events, _ = run(Fake([token("a", "a"), RemoteDone(finish)]))
        end = finished(events)
        assert end.reason is reason and end.summary["finish_reason"] == finish
        assert end.summary["prompt_tokens"] is None and end.summary["prompt_tok_per_s"] is None  # not 0


def test_a_server_that_ignores_max_tokens_is_not_followed_past_it() -> None:
    stats, events, _ = run(Fake([token("t", "t")] * 100 + [RemoteDone("length")]), max_tokens=5)
    assert stats.generated == 5 and finished(events).reason is StopReason.MAX_TOKENS


def test_no_logprobs_is_no_invented_top_k() -> None:
    _, events, ctl = run(Fake([token(None, "x", None), RemoteDone("stop")], top_k=0))
    (step,) = [e.step for e in events if isinstance(e, StepEvent)]
    assert step.trace.top_k_only == 0 and step.trace.server_sampled and math.isnan(step.prob)
    with pytest.raises(EngineError, match="the server sampled this run"):
        ctl.resample_last(BUILTIN_PRESETS["balanced"], step)


class _Stalling(http.server.BaseHTTPRequestHandler):
    """/v1/models answers; /v1/completions sends one token and then nothing; /slow/metrics answers after 20 s."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/metrics"):
            if self.path.startswith("/slow/"):
                time.sleep(20)  # under /slow/ the metrics never come (the fleet test)
            else:
                self.send_error(404)
                return
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {"choices": [{"index": 0, "text": " a", "logprobs": None, "finish_reason": None}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()
        time.sleep(20)  # a server that stalls (the test stops the run long before)


@pytest.fixture(scope="module")
def stalling() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_esc_stops_a_stalled_stream_at_once(stalling: str) -> None:
    from tui.remote import connect

    events: list[Any] = []
    ctl = RemoteController(RemoteEngine(connect(stalling, backend="openai")), BUILTIN_PRESETS["greedy"], seed=1,
                           emit=events.append, max_tokens=50)
    worker = threading.Thread(target=ctl.run, args=("hi",), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not any(isinstance(e, StepEvent) for e in events) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(isinstance(e, StepEvent) for e in events), "the first token never came"
    t0 = time.monotonic()
    ctl.stop()
    worker.join(timeout=5)
    assert not worker.is_alive() and time.monotonic() - t0 < 2  # not the 30 s read timeout
    end = finished(events)
    assert end.reason is StopReason.CANCELLED and end.error is None and end.text == " a"


class Answering(Fake):
    def metrics(self) -> MetricsSample:
        return MetricsSample(url="http://127.0.0.1:9", backend="openai", model="m", healthy=True, running=1.0)


def test_the_fleet_poll_is_not_held_by_one_slow_server(stalling: str) -> None:
    remotes = Remotes([RemoteSpec(stalling + "/slow", backend="openai"),
                       RemoteSpec("http://127.0.0.1:9", backend="openai")])
    remotes.backends["http://127.0.0.1:9"] = Answering([])  # connected already: its metrics answer at once
    t0 = time.monotonic()
    slow, quick = remotes.poll(wait=1.0)
    assert time.monotonic() - t0 < 2.5  # not the slow server's 20 s
    assert quick.healthy and quick.running == 1.0
    assert not slow.healthy and "no answer within 1 s" in slow.error
    again, _ = remotes.poll(wait=0.2)  # its first poll still hangs: it is not asked a second time
    assert "still waiting" in again.error
