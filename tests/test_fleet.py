"""The fleet view: each server's Prometheus page read into one MetricsSample (vLLM, SGLang, llama-server),
untrusted pages refused in one line, tokens/s from two polls, the FleetScreen on a fake poll, and the
reading over real HTTP from two local servers."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual.app import App
from textual.widgets import DataTable, Static

from tui.remote.backend import MetricsSample
from tui.remote.http import Endpoint, RemoteError
from tui.remote.metrics import (
    MAX_METRICS_CHARS,
    parse_prometheus,
    rate,
    sample_from_prometheus,
    scrape,
)

FIXTURES = Path(__file__).parent / "fixtures" / "remote"


def fixture(name: str) -> str:
    return (FIXTURES / f"metrics_{name}.txt").read_text()


def sample(text: str, backend: str) -> MetricsSample:
    return sample_from_prometheus(text, backend=backend, url="http://gpu-1:8000", model="m")


# -- (a) each backend's page -------------------------------------------------------------------------------


def test_every_fixture_says_where_its_shape_comes_from() -> None:
    for name in ("vllm", "sglang", "llama_server"):
        first = fixture(name).splitlines()[0]
        assert first.startswith("# shape from ") and "written for the tests" in first


def test_parse_keys_by_sample_name_with_every_label_set() -> None:
    samples = parse_prometheus(fixture("vllm"))
    assert "vllm:prompt_tokens_total" in samples and "vllm:prompt_tokens" not in samples
    assert "vllm:prompt_tokens_created" in samples  # a separate sample name, never mixed into the counter
    running = samples["vllm:num_requests_running"]
    assert sorted((labels["engine"], value) for labels, value in running) == [("0", 3.0), ("1", 1.0)]
    assert {labels["model_name"] for labels, _ in running} == {"Qwen/Qwen2.5-7B-Instruct"}
    assert samples["vllm:time_to_first_token_seconds_bucket"][-1][0]["le"] == "+Inf"


def test_vllm_sums_engines_and_averages_their_kv_usage() -> None:
    s = sample(fixture("vllm"), "vllm")
    assert (s.healthy, s.error) == (True, "")
    assert (s.running, s.waiting) == (4.0, 2.0)
    assert (s.generated_total, s.prompt_total, s.cache_hit_total) == (1500.0, 10000.0, 4000.0)
    assert s.kv_usage == pytest.approx(0.4)  # two engines at 0.5 and 0.3: the fleet's cache is 40% full, not 80%
    assert (s.url, s.backend, s.model) == ("http://gpu-1:8000", "vllm", "m")


def test_vllm_before_0_9_reports_kv_usage_under_its_old_name() -> None:
    old = "\n".join(line for line in fixture("vllm").splitlines() if "vllm:kv_cache_usage_perc" not in line)
    assert sample(old, "vllm").kv_usage == pytest.approx(0.4)  # from vllm:gpu_cache_usage_perc


def test_sglang() -> None:
    s = sample(fixture("sglang"), "sglang")
    assert (s.running, s.waiting, s.kv_usage) == (5.0, 1.0, 0.25)
    assert (s.generated_total, s.prompt_total, s.cache_hit_total) == (6789.0, 12345.0, 4000.0)


def test_llama_server_without_a_kv_gauge_says_not_exposed_not_zero() -> None:
    s = sample(fixture("llama_server"), "llama-server")
    assert (s.running, s.waiting) == (2.0, 1.0)
    assert (s.generated_total, s.prompt_total, s.cache_hit_total) == (167.0, 9467.0, 2048.0)
    assert s.kv_usage is None


def test_an_older_llama_server_with_a_kv_gauge_and_no_cached_counter() -> None:
    text = "\n".join(line for line in fixture("llama_server").splitlines() if "prompt_tokens_cached" not in line)
    text += "\n# TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.125\n"
    s = sample(text, "llama-server")
    assert (s.kv_usage, s.cache_hit_total) == (0.125, None)


def test_a_page_without_the_backends_names_exposes_nothing() -> None:
    s = sample(fixture("sglang"), "vllm")
    assert s.healthy and all(v is None for v in (s.running, s.waiting, s.generated_total, s.prompt_total,
                                                 s.kv_usage, s.cache_hit_total))
    assert sample("", "llama-server").generated_total is None  # an empty page is a page with nothing on it


def test_a_backend_without_a_table_is_read_by_the_names_its_page_carries() -> None:
    assert sample(fixture("vllm"), "openai").generated_total == 1500.0
    assert sample(fixture("llama_server"), "openai").running == 2.0
    assert sample(fixture("vllm"), "ollama").backend == "ollama"


def test_nan_and_out_of_range_values_are_not_taken_at_face_value() -> None:
    text = "vllm:num_requests_running NaN\nvllm:kv_cache_usage_perc 1.7\nvllm:generation_tokens_total +Inf\n"
    s = sample(text, "vllm")
    assert (s.running, s.generated_total, s.kv_usage) == (None, None, 1.0)


# -- (b) untrusted pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "vllm:num_requests_running{engine=\"0\" 3\n",  # a label set that never closes
    "vllm:num_requests_running three\n",
    "metric{a=\"1\",a=\"2\"} 1\n",  # a label twice
    "\x1b]0;pwned\x07 1\n",
    "{} 1\n",
])
def test_a_malformed_page_is_one_remote_error(text: str) -> None:
    with pytest.raises(RemoteError) as err:
        parse_prometheus(text)
    assert err.value.kind == "bad-metrics"
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message and "\x07" not in message


def test_an_html_page_and_an_oversized_page_are_refused() -> None:
    with pytest.raises(RemoteError, match="HTML page") as err:
        sample("<!DOCTYPE html><html><body>login</body></html>", "vllm")
    assert err.value.kind == "bad-metrics" and "http://gpu-1:8000/metrics" in str(err.value)
    with pytest.raises(RemoteError, match="MiB") as err:
        parse_prometheus("a 1\n" * (MAX_METRICS_CHARS // 4 + 1))
    assert err.value.kind == "bad-metrics"


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_remote_error_only(text: str) -> None:
    try:
        parse_prometheus(text)
    except RemoteError as exc:
        assert exc.kind == "bad-metrics" and "\n" not in str(exc)


# -- (c) tokens per second -----------------------------------------------------------------------------------


def _at(t: float, generated: float | None, healthy: bool = True) -> MetricsSample:
    return MetricsSample(url="u", backend="vllm", model="m", healthy=healthy, generated_total=generated, t=t)


def test_rate_is_the_counters_slope() -> None:
    assert rate(_at(10.0, 1000), _at(12.0, 1300)) == pytest.approx(150.0)
    assert rate(_at(10.0, 1000), _at(12.0, 1000)) == 0.0  # idle: zero, which is a value


def test_rate_is_none_when_it_cannot_be_known() -> None:
    assert rate(None, _at(12.0, 1300)) is None  # the first poll
    assert rate(_at(10.0, 5000), _at(12.0, 20)) is None  # the counter went back: the server restarted
    assert rate(_at(10.0, 1000), _at(10.0, 1100)) is None  # no time passed
    assert rate(_at(12.0, 1000), _at(10.0, 1100)) is None
    assert rate(_at(10.0, None), _at(12.0, 1100)) is None  # not exposed
    assert rate(_at(10.0, 1000), _at(12.0, None, healthy=False)) is None


# -- (d) the screen ------------------------------------------------------------------------------------------


class Host(App[None]):
    def __init__(self, screen: Any) -> None:
        super().__init__()
        self.opened = screen
        self.dismissed: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.opened, self.dismissed.append)


class FakeFleet:
    """Two servers: a vLLM generating 100 tokens/s (by its own clock) and one that refuses connections."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_next = False

    def __call__(self) -> list[MetricsSample]:
        self.calls += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the poll itself broke")
        n = self.calls
        return [
            MetricsSample(url="http://gpu-1:8000", backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", healthy=True,
                          running=float(n), waiting=0.0, generated_total=1000.0 + 200.0 * n, prompt_total=5000.0,
                          kv_usage=0.42, cache_hit_total=1_500_000.0, t=2.0 * n),
            MetricsSample(url="http://gpu-2:8080", backend="llama-server", model="smol\x1b[2J", healthy=False,
                          error="connection refused at http://gpu-2:8080/metrics: is the server running on that port?"),
        ]


def rows(app: App[Any]) -> list[list[str]]:
    table = app.screen.query_one("#fleet", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def poll(pilot: Any) -> None:
    await pilot.press("r")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_the_fleet_table_after_one_and_two_polls_and_enter_attaches() -> None:
    from tui.app.screens.fleet import FleetScreen

    fleet = FakeFleet()
    app = Host(FleetScreen(fleet, interval=3600))  # the timer never fires here: the test polls with r
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        first = rows(app)
        assert first[0] == ["http://gpu-1:8000", "vllm", "Qwen/Qwen2.5-7B-Instruct", "1", "0",
                            "—", "42%", "1.5M", "ok"]  # one poll: no rate yet
        assert first[1][2] == "smol␛[2J"  # a server's text is shown, never obeyed
        assert first[1][3:8] == ["—"] * 5
        assert first[1][8].startswith("connection refused at http://gpu-2:8080")
        header = str(app.screen.query_one("#fleet-header", Static).render())
        assert "2 servers" in header and "every 3600 s" in header

        await poll(pilot)
        second = rows(app)
        assert second[0][3] == "2" and second[0][5] == "100.0"  # 200 tokens in 2 s
        assert second[1][8].startswith("connection refused")  # the failing row stays, the other one moves on

        detail = app.screen.query_one("#fleet-detail", Static)
        assert str(detail.render()).startswith("its requests: not exposed by this server")  # vLLM lists none
        await pilot.press("down")
        assert str(detail.render()).endswith("is the server running on that port?")  # the whole line
        await pilot.press("enter")
        await pilot.pause()
    assert fleet.calls == 2 and app.dismissed == [1]


async def test_not_exposed_is_said_dim_and_escape_dismisses_with_none() -> None:
    from tui.app.screens.fleet import FleetScreen

    def poll_bare() -> list[MetricsSample]:
        return [MetricsSample(url="http://box:11434", backend="ollama", model="llama3", healthy=True)]

    app = Host(FleetScreen(poll_bare, interval=3600))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert rows(app) == [["http://box:11434", "ollama", "llama3"] + ["not exposed"] * 5 + ["ok"]]
        cell = app.screen.query_one("#fleet", DataTable).get_cell_at((0, 3))
        assert "dim" in str(cell.style)
        header = str(app.screen.query_one("#fleet-header", Static).render())
        assert "1 server," in header
        await pilot.press("escape")
        await pilot.pause()
    assert app.dismissed == [None]


async def test_a_poll_that_raises_is_reported_and_the_rows_stay() -> None:
    from tui.app.screens.fleet import FleetScreen

    fleet = FakeFleet()
    app = Host(FleetScreen(fleet, interval=3600))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        before = rows(app)
        fleet.fail_next = True
        await poll(pilot)
        assert rows(app) == before
        assert "poll failed: the poll itself broke" in str(app.screen.query_one("#fleet-header", Static).render())
        await poll(pilot)
        assert "poll failed" not in str(app.screen.query_one("#fleet-header", Static).render())
        assert rows(app)[0][3] == "3"


async def test_the_timer_polls_on_its_own() -> None:
    from tui.app.screens.fleet import FleetScreen

    fleet = FakeFleet()
    app = Host(FleetScreen(fleet, interval=0.2))
    async with app.run_test(size=(160, 30)) as pilot:
        for _ in range(100):
            if fleet.calls >= 3:
                break
            await pilot.pause(0.05)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert fleet.calls >= 3 and rows(app)[0][5] == "100.0"


# -- (e) over real HTTP ------------------------------------------------------------------------------------


class MetricsServer:
    """A stdlib HTTP server on 127.0.0.1 (port 0) that answers GET /metrics with ``body`` and 404 elsewhere."""

    def __init__(self, body: str) -> None:
        self.body = body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                data = outer.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def two_servers() -> Iterator[tuple[MetricsServer, MetricsServer]]:
    vllm, llama = MetricsServer(fixture("vllm")), MetricsServer(fixture("llama_server"))
    try:
        yield vllm, llama
    finally:
        vllm.stop()
        llama.stop()


def test_two_real_servers_over_http(two_servers: tuple[MetricsServer, MetricsServer]) -> None:
    vllm, llama = two_servers
    a = sample_from_prometheus(Endpoint(vllm.url).get_text("/metrics"), backend="vllm", url=vllm.url, model="q")
    b = sample_from_prometheus(Endpoint(llama.url).get_text("/metrics"), backend="llama-server", url=llama.url,
                               model="s")
    assert (a.running, a.waiting, a.generated_total, a.cache_hit_total) == (4.0, 2.0, 1500.0, 4000.0)
    assert a.kv_usage == pytest.approx(0.4)
    assert (b.running, b.waiting, b.generated_total, b.cache_hit_total, b.kv_usage) == (2.0, 1.0, 167.0, 2048.0, None)


def test_scrape_gives_a_rate_over_http_and_never_raises(two_servers: tuple[MetricsServer, MetricsServer]) -> None:
    vllm, llama = two_servers
    endpoint = Endpoint(llama.url, timeout=5)
    first = scrape(endpoint, backend="llama-server", model="s")
    llama.body = llama.body.replace("llamacpp:tokens_predicted_total 167", "llamacpp:tokens_predicted_total 367")
    second = scrape(endpoint, backend="llama-server", model="s")
    assert first.healthy and second.healthy and second.url == llama.url
    tps = rate(first, second)
    assert tps is not None and tps > 0 and tps == pytest.approx(200 / (second.t - first.t))

    off = scrape(Endpoint(vllm.url, timeout=5), backend="vllm", model="q", path="/nope")
    assert not off.healthy and "metrics are off" in off.error and "\n" not in off.error

    llama.body = "<html><body>proxy login</body></html>"
    html = scrape(endpoint, backend="llama-server", model="s")
    assert not html.healthy and "HTML page" in html.error

    vllm.stop()
    gone = scrape(Endpoint(vllm.url, timeout=5), backend="vllm", model="q")
    assert not gone.healthy and gone.error.startswith("connection refused")
    assert gone.running is None and gone.generated_total is None


async def test_a_servers_requests_show_under_the_table_each_on_its_line() -> None:
    from tui.app.screens.fleet import FleetScreen

    def poll_slots() -> list[MetricsSample]:
        return [MetricsSample(url="http://box:8080", backend="llama-server", model="m", healthy=True,
                              requests=("slot 0: generating · task 7 · prompt 12 (4 from the cache) · decoded 3",
                                        "slot 1: idle \x1b[2J"))]

    app = Host(FleetScreen(poll_slots, interval=3600))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        text = str(app.screen.query_one("#fleet-detail", Static).render())
        assert text.splitlines() == ["its requests (slots):",
                                     "slot 0: generating · task 7 · prompt 12 (4 from the cache) · decoded 3",
                                     "slot 1: idle ␛[2J"]  # one line each; a server's text never obeyed
