"""The remote panels against real servers on loopback, all serving the real SmolLM2:

* llama.cpp's own ``llama-server``, built from the source llama-cpp-python vendors
  (``benchmarks/build_llama_server.sh``; these tests skip, saying so, where it is not built);
* llama-cpp-python's ``python -m llama_cpp.server``;
* llmtui's own server (``tui.server.start_local``, in this process, on the module's engine).

Each test asks the server itself for the reference (its own greedy completion, its own logprobs) and checks
that what llmtui shows is that, and nothing invented.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import until
from tui.engine.controller import StepEvent
from tui.engine.models import describe_file
from tui.remote import connect, normalise_url
from tui.remote.entries import Remotes, RemoteSpec
from tui.remote.controller import RemoteController, ServerCounters
from tui.remote.source import RemoteEngine
from tui.sampling.presets import BUILTIN_PRESETS, load_presets

PROMPT = "The capital of France is"
N = 12  # tokens per run: enough to cross a sentence end, cheap on 2 cores


def llama_server_binary() -> Path | None:
    """``$LLMTUI_LLAMA_SERVER``, else where benchmarks/build_llama_server.sh puts it, else PATH."""
    env = os.environ.get("LLMTUI_LLAMA_SERVER")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for candidate in (env, cache / "llmtui" / "llama-server" / "llama-server", shutil.which("llama-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, path: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {timeout:.0f} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """By its PID, never by name."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def serving(tmp_path_factory: pytest.TempPathFactory, name: str, ready: str, env: dict[str, str] | None,
            command: Any) -> Iterator[str]:
    """A server process on a free loopback port (``command(port)``), its URL once ``ready`` answers; stopped
    by its PID afterwards, its log kept for the failure message."""
    port = free_port()
    log = tmp_path_factory.mktemp(name) / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command(port), stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, ready, log)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def llama_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory):
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama.cpp's llama-server is not built here: run benchmarks/build_llama_server.sh (~5 min on "
                    "2 cores) or set LLMTUI_LLAMA_SERVER")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    yield from serving(tmp_path_factory, "llama-server", "/health", env, lambda port: [
        str(binary), "-m", str(smollm2_path), "--host", "127.0.0.1", "--port", str(port), "-c", "1024", "-np", "1",
        "-t", "1", "--metrics"])


@pytest.fixture(scope="module")
def llama_cpp_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from serving(tmp_path_factory, "llama-cpp-server", "/v1/models", None, lambda port: [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path), "--host", "127.0.0.1", "--port",
        str(port), "--n_ctx", "1024", "--n_threads", "1"])


@pytest.fixture(scope="module")
def llmtui_server(engine, smollm2_path: Path):
    from tui.server import start_local

    server = start_local(engine, describe_file(smollm2_path), catalog=load_presets(None),
                         preset=BUILTIN_PRESETS["greedy"], seed=1)
    try:
        yield normalise_url(server.url)  # its url names the /v1 base
    finally:
        server.stop()


SERVERS = ["llama-server", "llama_cpp.server", "llmtui"]
FIXTURES = {"llama-server": "llama_server", "llama_cpp.server": "llama_cpp_server", "llmtui": "llmtui_server"}


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, request.getfixturevalue(FIXTURES[request.param])


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def server_greedy(kind: str, url: str, n: int = N) -> tuple[str, list[dict[str, float]]]:
    """The server's own greedy completion of PROMPT and, per token, its top-10 {token text: probability}."""
    if kind == "llama-server":
        out = post(url + "/completion", {"prompt": PROMPT, "n_predict": n, "temperature": 0, "n_probs": 10,
                                         "cache_prompt": False})
        tops = [{bytes(c["bytes"]).decode("utf-8", "replace"): math.exp(c["logprob"]) for c in e["top_logprobs"]}
                for e in out["completion_probabilities"]]
        return out["content"], tops
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as resp:
        model = json.loads(resp.read())["data"][0]["id"]
    body = {"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0, "logprobs": 10}
    if kind == "llama_cpp.server":
        body["repeat_penalty"] = 1.0  # its default is 1.1: greedy means no penalty
    out = post(url + "/v1/completions", body)
    choice = out["choices"][0]
    tops = [{tok: math.exp(lp) for tok, lp in top.items()} for top in choice["logprobs"]["top_logprobs"]]
    return choice["text"], tops


def run_remote(url: str, *, probe: bool, n: int = N) -> tuple[Any, list[Any], RemoteEngine]:
    events: list[Any] = []
    engine = RemoteEngine(connect(url))
    controller = RemoteController(engine, BUILTIN_PRESETS["greedy"], probe=probe, seed=1, emit=events.append,
                                  max_tokens=n)
    return controller.run(PROMPT), events, engine


def steps(events: list[Any]) -> list[Any]:
    return [e.step for e in events if isinstance(e, StepEvent) and not e.pending]


def test_auto_detects_each_real_server(server: tuple[str, str]) -> None:
    kind, url = server
    info = connect(url).info()
    assert info.backend == {"llama-server": "llama-server"}.get(kind, "openai")
    assert "SmolLM2" in info.model
    assert info.max_top_k > 0
    if kind == "llama-server":  # what only llama-server exposes
        assert (info.n_ctx, info.n_vocab, info.token_ids) == (1024, 49152, True)
    else:
        assert info.n_ctx is None and not info.exposes["kv"]  # not exposed: never guessed


def test_streamed_tokens_and_top_k_are_the_servers(server: tuple[str, str]) -> None:
    kind, url = server
    text, tops = server_greedy(kind, url)
    stats, events, engine = run_remote(url, probe=False)
    got = steps(events)
    assert stats.error is None
    assert "".join(s.text for s in got) == text == stats.text
    for step, top in zip(got, tops):
        tr = step.trace
        assert tr.top_k_only > 0 and not tr.stages  # the server sampled: its chain is not shown as ours
        shown = {engine.piece(int(t)).decode("utf-8", "replace"): p for t, p in zip(tr.top_ids, tr.top_p_before)}
        common = set(shown) & set(top)
        assert len(common) >= 8  # the same candidates (ties at the cut may swap the last ones)
        for piece in common:
            assert shown[piece] == pytest.approx(top[piece], abs=2e-3)
        # entropy over the top-K only: a lower bound, computed from what was shown
        p = tr.top_p_before[tr.top_p_before > 0]
        assert tr.entropy == pytest.approx(float(-(p * pytest.importorskip("numpy").log(p)).sum()), rel=1e-5)


def test_probe_mode_greedy_is_the_servers_greedy(server: tuple[str, str]) -> None:
    kind, url = server
    text, _ = server_greedy(kind, url)
    stats, events, _engine = run_remote(url, probe=True)
    assert stats.error is None
    probes = [e for e in events if isinstance(e, ServerCounters) and e.step >= 0]
    assert len(probes) == len(steps(events))  # one request per token
    got = steps(events)
    assert all(s.trace.stages and s.trace.top_k_only for s in got)  # our chain ran, on the server's top-K
    merged = next((p.step for p in probes if p.retokenized), None)
    if kind == "llama-server":
        # token ids in, the prompt cache reused: each probe evaluates one token
        assert stats.text == text
        assert merged is None
        assert all(p.prompt_n == 1 and p.cache_n >= 5 for p in probes[1:])
    else:
        # text in: equal until the server re-reads our text as other tokens (it says where)
        upto = len(got) if merged is None else merged  # probe i gave step i: the steps before it stand
        assert "".join(s.text for s in got[:upto]) == text[:len("".join(s.text for s in got[:upto]))]
        assert upto >= 3


def test_generate_json_and_recording_of_a_remote_run(llama_server: str, tmp_path: Path) -> None:
    from tui.record import read_session

    record = tmp_path / "remote.jsonl"
    out = subprocess.run([sys.executable, "-m", "tui.cli", "generate", PROMPT, "--remote", llama_server, "--raw",
                          "--preset", "greedy", "-n", str(N), "--json", "--record", str(record)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LLMTUI_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    step_lines, summary = lines[:-1], lines[-1]["summary"]
    text, _ = server_greedy("llama-server", llama_server)
    assert "".join(s["text"] for s in step_lines) == text
    assert all(s["entropy_is_lower_bound"] and s["top_k_only"] == 20 for s in step_lines)
    assert all(s["stages"] == [] for s in step_lines)  # the server's chain: not exposed, not invented
    assert summary["remote"]["backend"] == "llama-server" and summary["server"]["predicted_n"] == N
    session = read_session(record)  # replays without the server
    head = session.header
    assert head["remote"]["url"] == llama_server and head["remote"]["exposed"]["kv"] is True
    assert head["remote"]["mode"] == "stream"
    assert session.text == text
    assert [s.trace.top_k_only for s in session.steps] == [20] * N
    assert all(s.trace.server_sampled for s in session.steps)
    fork = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(record), "--fork", "3"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "LLMTUI_HOME": str(tmp_path / "home")})
    assert fork.returncode == 2 and fork.stderr.count("\n") == 1  # one line: a server's run has no model file here
    assert "recorded from llama-server" in fork.stderr and "forking a remote run is not supported" in fork.stderr


def test_recording_keeps_credentials_out(llama_server: str, tmp_path: Path) -> None:
    port = llama_server.rsplit(":", 1)[1]
    record = tmp_path / "r.jsonl"
    out = subprocess.run([sys.executable, "-m", "tui.cli", "generate", "Hi", "--remote",
                          f"http://user:secret@127.0.0.1:{port}", "--raw", "-n", "2", "--record", str(record)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LLMTUI_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert "secret" not in record.read_text() and "user" not in json.loads(record.read_text().splitlines()[0])[
        "remote"]["url"]


def test_fleet_lists_two_real_servers_with_their_metrics(llama_server: str, llmtui_server: str) -> None:
    from tui.remote.metrics import rate

    remotes = Remotes([RemoteSpec(llama_server), RemoteSpec(llmtui_server)])
    before = remotes.poll()
    post(llama_server + "/completion", {"prompt": PROMPT, "n_predict": 5, "temperature": 0})
    server_greedy("llmtui", llmtui_server, 5)
    after = remotes.poll()
    assert [s.backend for s in after] == ["llama-server", "llmtui"]
    for old, new in zip(before, after):
        assert new.healthy and new.error == ""
        assert new.running == 0 and new.waiting == 0
        assert new.generated_total - old.generated_total == 5  # the requests just made
        assert rate(old, new) > 0
    assert after[1].kv_usage is not None and 0 < after[1].kv_usage < 1  # ours exposes it; llama-server's build not
    assert after[0].kv_usage is None
    # "watch its requests": llama-server lists its slots (one, -np 1), the last request's task among them
    assert after[0].requests is not None and len(after[0].requests) == 1
    assert after[0].requests[0].startswith("slot 0: idle · task ")
    assert after[1].requests is None  # ours does not list requests: not exposed, not invented


async def test_dashboard_on_llama_server_shows_the_servers_text(llama_server: str) -> None:
    from tui.app.app import LlmTuiApp
    from tui.app.widgets.panels import StatusLine, TopKHistogram
    from tui.app.widgets.token_stream import TokenStream
    from tui.engine import EngineSettings

    remotes = Remotes([RemoteSpec(llama_server)])
    app = LlmTuiApp(load=lambda e, p: remotes.load(e), entry=remotes.entries()[0], remotes=remotes,
                    model_label=llama_server, settings=EngineSettings(n_ctx=512, seed=1),
                    preset=BUILTIN_PRESETS["greedy"], catalog=load_presets(None), max_tokens=N,
                    live_metrics=False, chat=False, prompt=PROMPT)
    text, _ = server_greedy("llama-server", llama_server)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.engine is not None, timeout=30)
        assert app.remote.attached is not None and app.controller.probe is False
        result = await app.generate(PROMPT)
        assert result.text == text
        await pilot.pause(0.3)  # the bounded refresh folds the last events
        assert app.dashboard.query_one(TokenStream).text() == text
        hist = app.dashboard.query_one(TopKHistogram)
        assert "the server's top-20" in hist.render_line(0).text
        assert "H ≥" in hist.render_line(1).text  # a lower bound, never the entropy
        assert "llama-server · stream" in app.dashboard.query_one(StatusLine).text
        # probe mode from the keyboard: the same text, sampled here
        await pilot.press("o")
        assert app.controller.probe is True
        result = await app.generate(PROMPT)
        assert result.text == text
        assert any(p.cache_n for p in app.dashboard.model.probes)
