"""vLLM, Ollama and SGLang backends through the real HTTP path, against fixtures written from their docs.

None of these servers can run here: ``tests/fixtures/remote/README.md`` says where each fixture's shape
comes from, and that none was captured from a running server. One stdlib HTTP server on 127.0.0.1 serves
them to the whole module, by method and path, under one prefix per server (``/vllm``, ``/ollama``,
``/sglang``...), so ``tui.remote.connect`` has to tell them apart from what they answer, as it would in use.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.remote_fakes import JsonHandler
from tui.engine.controller import Finished, StepEvent
from tui.engine.loop import StopReason
from tui.remote import RemoteError, connect
from tui.remote.backend import Backend, RemoteDone, RemoteToken, Request, Sampling
from tui.remote.http import Endpoint
from tui.remote.ollama import OllamaBackend
from tui.remote.sglang import SGLangBackend
from tui.remote.controller import RemoteController
from tui.remote.source import RemoteEngine
from tui.remote.vllm import VLLMBackend
from tui.sampling.presets import BUILTIN_PRESETS

FIXTURES = Path(__file__).parent / "fixtures" / "remote"

Route = str | Callable[[Any], str]


def _streamed(stream: str, single: str) -> Callable[[Any], str]:
    """The streamed fixture when the request asks for a stream, else the single answer."""
    return lambda body: stream if isinstance(body, dict) and body.get("stream") else single


ROUTES: dict[tuple[str, str, str], Route] = {
    ("vllm", "GET", "/version"): "vllm_version.json",
    ("vllm", "GET", "/v1/models"): "vllm_models.json",
    ("vllm", "GET", "/metrics"): "metrics_vllm.txt",  # the metrics tests' page (read here, never changed)
    ("vllm", "POST", "/v1/completions"): _streamed("vllm_completions_stream.txt", "vllm_completions_probe.json"),
    ("ollama", "GET", "/api/version"): "ollama_version.json",
    ("ollama", "GET", "/api/ps"): "ollama_ps.json",
    ("ollama", "GET", "/api/tags"): "ollama_tags.json",
    ("ollama", "POST", "/api/show"): "ollama_show.json",
    ("ollama", "POST", "/api/generate"): _streamed("ollama_generate_stream.jsonl", "ollama_generate_probe.json"),
    ("ollama", "POST", "/api/chat"): "ollama_chat_stream.jsonl",
    ("sglang", "GET", "/get_model_info"): "sglang_model_info.json",
    ("sglang", "GET", "/get_server_info"): "sglang_server_info.json",
    ("sglang", "GET", "/v1/models"): "sglang_models.json",
    ("sglang", "POST", "/tokenize"): "sglang_tokenize.json",
    ("sglang", "POST", "/generate"): _streamed("sglang_generate_stream.txt", "sglang_generate_probe.json"),
    ("sglang", "POST", "/v1/chat/completions"): "sglang_chat_stream.txt",
    # the same SGLang started with --incremental-streaming-output
    ("sglang-inc", "POST", "/generate"): _streamed("sglang_generate_stream_incremental.txt",
                                                   "sglang_generate_probe.json"),
    # malformed streams (written here, not from any server): each must end in RemoteError("bad-json")
    ("junk-ollama", "POST", "/api/generate"): "junk:ollama-logprobs",
    ("junk-ollama", "POST", "/api/chat"): "junk:ollama-array",
    ("junk-sglang", "POST", "/generate"): "junk:sglang-triple",
}
BASE = {"sglang-inc": "sglang", "junk-ollama": "ollama", "junk-sglang": "sglang"}  # what a variant answers else

JUNK = {
    "ollama-logprobs": b'{"model":"m","response":"a","done":false,"logprobs":["not an entry"]}\n',
    "ollama-array": b'["model", "m"]\n',
    "sglang-triple": b'data: {"text":"a","meta_info":{"completion_tokens":1,"finish_reason":null,'
                     b'"output_token_logprobs":[["-0.5","x"]]}}\n\n',
}


def _content_type(name: str) -> str:
    if name.endswith(".jsonl") or name.startswith("junk:ollama"):
        return "application/x-ndjson"
    if name.endswith("_stream.txt") or name.endswith("_incremental.txt") or name.startswith("junk:"):
        return "text/event-stream"
    return "text/plain; version=0.0.4" if name.startswith("metrics_") else "application/json"


def _cut(name: str, data: bytes) -> bytes:
    """A stream broken off after its first two events, before any end marker."""
    if name.endswith(".jsonl"):
        return b"".join(data.splitlines(keepends=True)[:2])
    events = [e for e in data.split(b"\n\n") if e.startswith(b"data:")]
    return b"\n\n".join(events[:2]) + b"\n\n"


class _Handler(JsonHandler):  # one answer per connection; the body ends when the connection does

    def _answer(self, method: str, body: Any) -> None:
        parts = self.path.split("?", 1)[0].split("/")[1:]  # [cut,] server, path...
        cut = parts[:1] == ["cut"]
        parts = parts[1:] if cut else parts
        server, path = (parts[0] if parts else ""), "/" + "/".join(parts[1:])
        self.server.requests.append((server, method, path, body))  # type: ignore[attr-defined]
        route = ROUTES.get((server, method, path)) or ROUTES.get((BASE.get(server, ""), method, path))
        name = route(body) if callable(route) else route
        if name is None:
            return self._send(404, "application/json", b'{"detail":"Not Found"}')
        data = JUNK[name[5:]] if name.startswith("junk:") else (FIXTURES / name).read_bytes()
        ctype = _content_type(name)
        streamed = ctype in ("application/x-ndjson", "text/event-stream")
        self._send(200, ctype, _cut(name, data) if cut and streamed else data)

    def _send(self, status: int, ctype: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, name="fixture-http", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def url(server: ThreadingHTTPServer, prefix: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{prefix}"


def last_body(server: ThreadingHTTPServer, path: str) -> Any:
    return next(body for _, method, p, body in reversed(server.requests) if p == path and method == "POST")


def run(backend: Backend, request: Request) -> tuple[list[RemoteToken], RemoteDone]:
    items = list(backend.stream(request))
    assert isinstance(items[-1], RemoteDone) and all(isinstance(i, RemoteToken) for i in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def greedy(prompt: str = "", **kw: Any) -> Request:
    return Request(prompt=prompt, max_tokens=kw.pop("max_tokens", 5), n_probs=20,
                   sampling=Sampling(temperature=0.0, seed=1), **kw)


def entropy(logprobs: list[float]) -> float:
    return -sum(math.exp(lp) * lp for lp in logprobs)


# -- the fixtures' own top-K, read straight from the files (what the backends must reproduce) --------------------

def _sse_events(name: str) -> list[dict[str, Any]]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and "[DONE]" not in line]


def fixture_top_logprobs(server_name: str) -> list[list[float]]:
    """Per generated token, the logprobs of the fixture's top-K."""
    if server_name == "vllm":
        return [list(c["logprobs"]["top_logprobs"][0].values())
                for e in _sse_events("vllm_completions_stream.txt") for c in e["choices"]]
    if server_name == "ollama":
        lines = [json.loads(line) for line in (FIXTURES / "ollama_generate_stream.jsonl").read_text().splitlines()]
        return [[c["logprob"] for c in lp["top_logprobs"]] for line in lines for lp in line.get("logprobs", [])]
    last = _sse_events("sglang_generate_stream.txt")[-1]  # cumulative: the last chunk lists every token
    return [[c[0] for c in top] for top in last["meta_info"]["output_top_logprobs"]]


# -- detection and what each server is ---------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "cls", "model", "n_ctx", "token_ids", "version"), [
    ("vllm", VLLMBackend, "Qwen/Qwen2.5-7B-Instruct", 32768, False, "0.11.2"),
    ("ollama", OllamaBackend, "llama3.2:3b", 4096, False, "0.13.0"),  # the running context (/api/ps)
    ("sglang", SGLangBackend, "meta-llama/Llama-3.1-8B-Instruct", 131072, True, "0.5.5"),
    ("sglang-inc", SGLangBackend, "meta-llama/Llama-3.1-8B-Instruct", 131072, True, "0.5.5"),
])
def test_connect_detects_each_server(server, prefix, cls, model, n_ctx, token_ids, version):
    backend = connect(url(server, prefix), timeout=5)
    assert type(backend) is cls and backend.name == cls.name
    info = backend.info()
    assert (info.backend, info.model, info.n_ctx, info.token_ids, info.version) == (cls.name, model, n_ctx,
                                                                                   token_ids, version)
    assert info.max_top_k == 20 and info.chat
    assert info.url == url(server, prefix)


def test_what_each_server_exposes(server):
    vllm = connect(url(server, "vllm"), timeout=5).info()
    assert vllm.exposes["metrics"] and vllm.exposes["kv"]
    assert not vllm.exposes["cache_n"]  # cached_tokens only with --enable-prompt-tokens-details: not promised
    assert not vllm.exposes["tokenize"] and not vllm.exposes["token_ids"]
    ollama = connect(url(server, "ollama"), timeout=5).info()
    assert ollama.n_vocab == 128256  # /api/show's llama.vocab_size
    assert not any(ollama.exposes[k] for k in ("metrics", "kv", "tokenize", "cache_n", "token_ids"))
    sglang = connect(url(server, "sglang"), timeout=5).info()
    assert sglang.exposes["tokenize"] and sglang.exposes["cache_n"] and sglang.exposes["token_ids"]
    assert not sglang.exposes["metrics"] and any("--enable-metrics" in note for note in sglang.notes)


def test_vllm_is_not_taken_for_sglang(server):
    """Both answer /v1/models in one shape; only vLLM's entries are owned by "vllm"."""
    assert VLLMBackend.detect(Endpoint(url(server, "vllm")))
    assert not VLLMBackend.detect(Endpoint(url(server, "sglang")))
    assert not OllamaBackend.detect(Endpoint(url(server, "vllm")))
    assert not SGLangBackend.detect(Endpoint(url(server, "ollama")))


# -- vLLM ------------------------------------------------------------------------------------------------------

def test_vllm_streams_tokens_top_k_and_usage(server):
    backend = connect(url(server, "vllm"), timeout=5)
    tokens, done = run(backend, greedy("The capital of France is"))
    assert [t.text for t in tokens] == [" Paris", ",", " which", " is", " known"]
    assert [t.key for t in tokens] == [" Paris", ",", " which", " is", " known"]
    assert [t.logprob for t in tokens] == [-0.0513, -0.9163, -1.2040, -0.1054, -0.6931]
    assert [c.key for c in tokens[0].top] == [" Paris", " the", " a", " located"]  # sorted, best first
    assert [c.key for c in tokens[1].top] == [".", ",", " and"]  # the sampled token need not be the best
    for token in tokens:
        assert [c.logprob for c in token.top] == sorted((c.logprob for c in token.top), reverse=True)
    # prompt_n is what the server evaluated: usage's 5 prompt tokens include the 4 it had cached
    assert (done.finish_reason, done.prompt_n, done.cache_n, done.predicted_n) == ("length", 1, 4, 5)
    assert not done.stopped_eog
    body = last_body(server, "/v1/completions")
    assert body["stream_options"] == {"include_usage": True} and body["logprobs"] == 20
    assert body["prompt"] == "The capital of France is" and body["temperature"] == 0.0 and body["seed"] == 1


def test_vllm_probe(server):
    result = connect(url(server, "vllm"), timeout=5).probe("The capital of France is", 4)
    assert [c.key for c in result.top] == [" Paris", " the", " a", " located"]
    assert [c.logprob for c in result.top] == [-0.0513, -3.4012, -4.2201, -5.9034]
    assert result.prompt_n == 5
    body = last_body(server, "/v1/completions")
    assert (body["max_tokens"], body["logprobs"], body["temperature"]) == (1, 4, 0)


def test_vllm_metrics(server):
    backend = connect(url(server, "vllm"), timeout=5)
    sample = backend.metrics()
    assert sample.healthy and sample.backend == "vllm" and sample.model == "Qwen/Qwen2.5-7B-Instruct"
    assert sample.running is not None  # the page's vllm:num_requests_running


# -- Ollama ----------------------------------------------------------------------------------------------------

def test_ollama_streams_raw_completion_with_logprobs(server):
    backend = connect(url(server, "ollama"), timeout=5)
    tokens, done = run(backend, greedy("The mascot of Ollama is a"))
    assert [t.logprob for t in tokens] == [-0.2231, -0.3567, -0.0101, -0.5108]
    assert [t.text for t in tokens] == [" llama", " ", "🦙", "!"]  # decoded as the bytes arrive
    assert tokens[0].key == " llama" and tokens[3].key == "!"
    assert [c.logprob for c in tokens[1].top] == [-0.3567, -1.6094, -2.9957]  # sorted, best first
    assert [c.key for c in tokens[1].top][1:] == [".", ","]
    assert (done.finish_reason, done.prompt_n, done.predicted_n) == ("stop", 9, 4)
    assert (done.prompt_ms, done.predicted_ms, done.stopped_eog, done.cache_n) == (41.0, 88.0, True, None)
    body = last_body(server, "/api/generate")
    assert body["raw"] is True and body["stream"] is True and body["prompt"] == "The mascot of Ollama is a"
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["model"] == "llama3.2:3b"
    assert body["options"] == {"num_predict": 5, "temperature": 0.0, "seed": 1}


def test_ollama_split_utf8_character(server):
    """🦙 arrives as two tokens, each half of its bytes (their text is U+FFFD): the pieces join to it, and the two
    halves keep distinct keys (their bytes), not one shared U+FFFD."""
    tokens, _ = run(connect(url(server, "ollama"), timeout=5), greedy("The mascot of Ollama is a"))
    assert (tokens[1].piece, tokens[2].piece) == (b" \xf0\x9f", b"\xa6\x99")
    assert (tokens[1].piece + tokens[2].piece).decode("utf-8") == " 🦙"
    assert b"".join(t.piece for t in tokens).decode("utf-8") == " llama 🦙!"
    assert tokens[1].key != tokens[2].key and "\ufffd" not in f"{tokens[1].key}{tokens[2].key}"
    halves = [c for c in tokens[2].top]
    assert len({c.key for c in halves}) == 3 and halves[0].piece == b"\xa6\x99"


def test_ollama_chat(server):
    backend = connect(url(server, "ollama"), timeout=5)
    tokens, done = run(backend, Request(messages=({"role": "user", "content": "Hi"},), max_tokens=8, n_probs=3))
    assert [t.text for t in tokens] == ["Hello", "!"]
    assert [c.key for c in tokens[0].top] == ["Hello", "Hi", "Hey"]
    assert (done.finish_reason, done.prompt_n, done.predicted_n, done.stopped_eog) == ("stop", 14, 2, True)
    body = last_body(server, "/api/chat")
    assert body["messages"] == [{"role": "user", "content": "Hi"}] and "raw" not in body
    assert body["top_logprobs"] == 3 and body["options"] == {"num_predict": 8}


def test_ollama_probe(server):
    backend = connect(url(server, "ollama"), timeout=5)
    result = backend.probe("The mascot of Ollama is a", 3)
    assert [c.key for c in result.top] == [" llama", " large", " friendly"]
    assert result.prompt_n == 9
    body = last_body(server, "/api/generate")
    assert body["stream"] is False and body["raw"] is True and body["options"] == {"num_predict": 1, "temperature": 0}
    with pytest.raises(RemoteError) as err:
        backend.probe([1, 2, 3], 3)
    assert err.value.kind == "unsupported"


def test_ollama_metrics_invent_nothing(server):
    sample = connect(url(server, "ollama"), timeout=5).metrics()
    assert sample.healthy and sample.model == "llama3.2:3b" and sample.backend == "ollama"
    assert (sample.running, sample.waiting, sample.generated_total, sample.prompt_total, sample.kv_usage,
            sample.cache_hit_total) == (None,) * 6


# -- SGLang ----------------------------------------------------------------------------------------------------

SGLANG_IDS = [12366, 13, 1102, 374]


@pytest.mark.parametrize("prefix", ["sglang", "sglang-inc"])
def test_sglang_streams_token_ids_whether_chunks_repeat_or_not(server, prefix):
    """Default SGLang repeats the whole output in each chunk; --incremental-streaming-output sends only what is new:
    either way each token comes once."""
    backend = connect(url(server, prefix), timeout=5)
    tokens, done = run(backend, greedy("The capital of France is"))
    assert [t.key for t in tokens][:4] == SGLANG_IDS
    assert [t.text for t in tokens][:4] == [" Paris", ".", " It", " is"]
    assert [t.logprob for t in tokens][:4] == [-0.0312, -0.2744, -1.0788, -0.0619]
    assert [c.key for c in tokens[0].top] == [12366, 279, 264]
    assert [c.piece for c in tokens[2].top] == [b" It", b" The", b"\n\n"]
    if prefix == "sglang":
        assert len(tokens) == 4
        assert (done.finish_reason, done.predicted_n, done.stopped_eog) == ("length", 4, False)
    else:  # this one ends at the end-of-generation token, which SGLang lists like any other
        assert [t.key for t in tokens] == [*SGLANG_IDS, 128009]
        assert (done.finish_reason, done.predicted_n, done.stopped_eog) == ("stop", 5, True)
    assert (done.prompt_n, done.cache_n) == (1, 5)  # 6 prompt tokens, 5 of them from the radix cache
    body = last_body(server, "/generate")
    assert body["text"] == "The capital of France is" and body["stream"] is True
    assert body["return_logprob"] is True and body["top_logprobs_num"] == 20 and body["return_text_in_logprobs"]
    assert body["sampling_params"] == {"max_new_tokens": 5, "temperature": 0.0}


def test_sglang_probe_with_token_ids_and_text(server):
    backend = connect(url(server, "sglang"), timeout=5)
    result = backend.probe([128000, 791, 6864, 315, 9822, 374], 3)
    assert [c.key for c in result.top] == [12366, 279, 264]
    assert [c.logprob for c in result.top] == [-0.0312, -3.6109, -4.8675]
    assert (result.prompt_n, result.cache_n, result.eog) == (1, 5, ())
    body = last_body(server, "/generate")
    assert body["input_ids"] == [128000, 791, 6864, 315, 9822, 374] and "text" not in body
    assert body["stream"] is False and body["sampling_params"] == {"max_new_tokens": 1, "temperature": 0}
    backend.probe("The capital of France is", 3)
    assert last_body(server, "/generate")["text"] == "The capital of France is"


def test_sglang_tokenize_and_chat(server):
    backend = connect(url(server, "sglang"), timeout=5)
    assert backend.tokenize("The capital of France is") == [128000, 791, 6864, 315, 9822, 374]
    tokens, done = run(backend, Request(messages=({"role": "user", "content": "Hi"},), n_probs=3))
    assert [t.text for t in tokens] == ["Hi", "!"] and [c.key for c in tokens[0].top] == ["Hi", "Hello", "Hey"]
    assert done.finish_reason == "stop"
    assert last_body(server, "/v1/chat/completions")["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_sglang_metrics_off_is_an_error_that_says_so(server):
    with pytest.raises(RemoteError) as err:
        connect(url(server, "sglang"), timeout=5).metrics()
    assert err.value.kind == "not-found" and "--enable-metrics" in str(err.value)


# -- what goes wrong ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "request_"), [
    ("vllm", greedy("x")),
    ("ollama", greedy("x")),
    ("ollama", Request(messages=({"role": "user", "content": "Hi"},))),
    ("sglang", greedy("x")),
])
def test_a_stream_cut_before_its_end_is_died(server, prefix, request_):
    backend = connect(url(server, prefix), timeout=5)
    cut = type(backend)(Endpoint(url(server, f"cut/{prefix}"), timeout=5))
    items = []
    with pytest.raises(RemoteError) as err:
        for item in cut.stream(request_):
            items.append(item)
    assert err.value.kind == "died" and "\n" not in str(err.value)
    assert items and all(isinstance(i, RemoteToken) for i in items)  # what came before the cut came through


@pytest.mark.parametrize(("cls", "prefix", "request_"), [
    (OllamaBackend, "junk-ollama", greedy("x")),
    (OllamaBackend, "junk-ollama", Request(messages=({"role": "user", "content": "Hi"},))),
    (SGLangBackend, "junk-sglang", greedy("x")),
])
def test_bad_shapes_are_one_line_bad_json(server, cls, prefix, request_):
    backend = cls(Endpoint(url(server, prefix), timeout=5))
    with pytest.raises(RemoteError) as err:
        list(backend.stream(request_))
    assert err.value.kind == "bad-json" and "\n" not in str(err.value)


# -- end to end: a server as a source of steps ---------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "prompt", "text", "stop"), [
    ("vllm", "The capital of France is", " Paris, which is known", StopReason.MAX_TOKENS),
    ("ollama", "The mascot of Ollama is a", " llama 🦙!", StopReason.EOG),
    ("sglang", "The capital of France is", " Paris. It is", StopReason.MAX_TOKENS),
])
def test_remote_controller_streams_steps(server, prefix, prompt, text, stop):
    engine = RemoteEngine(connect(url(server, prefix), timeout=5))
    events: list[object] = []
    controller = RemoteController(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=events.append, max_tokens=5)
    stats = controller.run(prompt)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert "".join(s.text for s in steps) == text
    assert stats.stop_reason is stop and stats.error is None
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and finished[0].text == text
    expected = fixture_top_logprobs(prefix)
    assert len(steps) == len(expected)
    for step, top in zip(steps, expected):
        assert step.trace.top_k_only == len(top) > 0
        assert step.trace.entropy == pytest.approx(entropy(top), rel=1e-5)  # a lower bound: the tail is unknown
        assert step.trace.top_p_before[0] == pytest.approx(math.exp(max(top)), rel=1e-5)
