"""A server's Prometheus ``/metrics`` page, read into what the fleet view shows (stdlib and prometheus_client;
no Textual, no llama_cpp).

Each backend names the same few facts differently; one table per backend maps them onto
:class:`MetricsSample`. Where to look, from each server's source:

* llama-server (``--metrics``): ``llamacpp:*`` — the counters and gauges ``tools/server`` writes
  (``requests_processing``, ``requests_deferred``, ``tokens_predicted_total``, ``prompt_tokens_total``;
  ``prompt_tokens_cached_total`` and ``kv_cache_usage_ratio`` only in the builds that have them).
  Its ``tokens_predicted_total`` grows when a request *finishes*, so its rate comes in steps.
* vLLM: ``vllm:*`` from ``vllm/v1/metrics/loggers.py``, one label set per ``model_name`` and ``engine``.
* SGLang (``--enable-metrics``): ``sglang:*`` from ``python/sglang/srt/metrics/collector.py``.

A fact the page does not carry is ``None`` ("not exposed"), never 0. Counts and counters are summed over
label sets (engines, data-parallel ranks); a usage fraction is their mean, since each engine has its own cache.
The page is untrusted: it is size-bounded, and anything the parser rejects becomes one
:class:`RemoteError` with kind ``bad-metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..safe_text import visible
from .backend import MetricsSample
from .http import Endpoint, RemoteError

MAX_METRICS_CHARS = 8 * 1024 * 1024  # a metrics page is kilobytes; megabytes of it is not one we can use

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True, slots=True)
class MetricNames:
    """Where one backend keeps each fact: sample names, the first one present wins (newest name first)."""

    running: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    generated_total: tuple[str, ...] = ()
    prompt_total: tuple[str, ...] = ()
    kv_usage: tuple[str, ...] = ()  # a 0..1 fraction
    cache_hit_total: tuple[str, ...] = ()  # prompt tokens served from the cache


TABLES: dict[str, MetricNames] = {
    "llama-server": MetricNames(
        running=("llamacpp:requests_processing",),
        waiting=("llamacpp:requests_deferred",),
        generated_total=("llamacpp:tokens_predicted_total",),
        prompt_total=("llamacpp:prompt_tokens_total",),  # evaluated prompt tokens, cached ones not counted
        kv_usage=("llamacpp:kv_cache_usage_ratio",),  # older builds only
        cache_hit_total=("llamacpp:prompt_tokens_cached_total",),  # newer builds only
    ),
    "vllm": MetricNames(
        running=("vllm:num_requests_running",),
        waiting=("vllm:num_requests_waiting",),
        generated_total=("vllm:generation_tokens_total",),
        prompt_total=("vllm:prompt_tokens_total",),
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # renamed in 0.9; both are 0..1
        cache_hit_total=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    ),
    "llmtui": MetricNames(  # llmtui serve's own /metrics (tui/server/http.py)
        running=("llmtui:requests_processing",),
        waiting=("llmtui:requests_waiting",),
        generated_total=("llmtui:tokens_predicted_total",),
        prompt_total=("llmtui:prompt_tokens_total",),
        kv_usage=("llmtui:kv_cache_usage_ratio",),
        cache_hit_total=("llmtui:prompt_tokens_cached_total",),
    ),
    "sglang": MetricNames(
        running=("sglang:num_running_reqs",),
        waiting=("sglang:num_queue_reqs",),
        generated_total=("sglang:generation_tokens_total",),
        prompt_total=("sglang:prompt_tokens_total",),
        kv_usage=("sglang:token_usage",),
        cache_hit_total=("sglang:cached_tokens_total",),  # sglang:cache_hit_rate is a gauge of recent batches
    ),
}


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(visible(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def parse_prometheus(text: str, *, where: str = "the /metrics page") -> Samples:
    """Every sample of a Prometheus text page, keyed by sample name (``vllm:prompt_tokens_total``, not the
    family ``vllm:prompt_tokens``): ``{name: [(labels, value), ...]}``. ``where`` names the page in errors.
    Names are as prometheus_client reads them: a sample of a ``counter`` family whose name lacks ``_total``
    gets it (llama-server's ``llamacpp:n_tokens_max`` is read as ``llamacpp:n_tokens_max_total``).

    Raises :class:`RemoteError` (kind ``bad-metrics``, one line) for a page over
    :data:`MAX_METRICS_CHARS` or one that is not Prometheus text."""
    if len(text) > MAX_METRICS_CHARS:
        raise RemoteError(f"{where} is over {MAX_METRICS_CHARS // 2**20} MiB: not a metrics page llmtui can read",
                          kind="bad-metrics")
    if text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        raise RemoteError(f"{where} is an HTML page, not Prometheus metrics: is --metrics on?", kind="bad-metrics")
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):  # a generator: the parsing happens in this loop
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    except Exception as exc:  # noqa: BLE001 - mostly ValueError; on untrusted text any error means the same
        raise RemoteError(f"{where} is not Prometheus text ({_one_line(str(exc) or type(exc).__name__)})",
                          kind="bad-metrics") from None
    return samples


def _values(samples: Samples, names: tuple[str, ...]) -> list[float] | None:
    """The finite values of the first of ``names`` the page has (None: it has none of them)."""
    for name in names:
        if name in samples:
            values = [v for _, v in samples[name] if math.isfinite(v)]
            return values or None
    return None


def _sum(samples: Samples, names: tuple[str, ...]) -> float | None:
    values = _values(samples, names)
    return None if values is None else sum(values)


def _fraction(samples: Samples, names: tuple[str, ...]) -> float | None:
    values = _values(samples, names)
    return None if values is None else min(1.0, max(0.0, sum(values) / len(values)))


def table_for(backend: str, samples: Samples) -> MetricNames | None:
    """The backend's table; for a backend without one (``openai``, ``llmtui``...), the first table whose
    names the page carries (an OpenAI-compatible URL is often a vLLM or llama-server). None: no match."""
    if backend in TABLES:
        return TABLES[backend]
    for table in TABLES.values():
        if any(name in samples for field_names in (table.running, table.generated_total) for name in field_names):
            return table
    return None


def sample_from_prometheus(text: str, *, backend: str, url: str, model: str) -> MetricsSample:
    """One healthy :class:`MetricsSample` from a ``/metrics`` page; facts the page lacks are None.
    Raises :class:`RemoteError` (kind ``bad-metrics``) for a page that cannot be read."""
    samples = parse_prometheus(text, where=f"{visible(url)}/metrics")
    table = table_for(backend, samples) or MetricNames()
    return MetricsSample(url=url, backend=backend, model=model, healthy=True,
                         running=_sum(samples, table.running), waiting=_sum(samples, table.waiting),
                         generated_total=_sum(samples, table.generated_total),
                         prompt_total=_sum(samples, table.prompt_total),
                         kv_usage=_fraction(samples, table.kv_usage),
                         cache_hit_total=_sum(samples, table.cache_hit_total))


def scrape(endpoint: Endpoint, *, backend: str, model: str, path: str = "/metrics",
           timeout: float | None = None) -> MetricsSample:
    """GET ``path`` and read it; never raises: a server that fails gives ``healthy=False`` and its one-line
    error (what the fleet view polls, one call per server)."""
    try:
        return sample_from_prometheus(endpoint.get_text(path, timeout=timeout, limit=MAX_METRICS_CHARS),
                                      backend=backend, url=endpoint.shown, model=model)
    except RemoteError as exc:
        error = str(exc)
        if exc.kind == "not-found":
            error = (f"{endpoint.shown}{path} answered 404: metrics are off (llama-server --metrics, "
                     "SGLang --enable-metrics)")
        return MetricsSample(url=endpoint.shown, backend=backend, model=model, healthy=False,
                             error=_one_line(error, 200))


def server_metrics(endpoint: Endpoint, *, backend: str, url: str, model: str) -> MetricsSample:
    """A reachable server's metrics: its ``/metrics`` page read, or — where it has none (404) — a healthy row
    whose figures are all "not exposed". Raises RemoteError for a server that does not answer."""
    try:
        text = endpoint.get_text("/metrics", limit=MAX_METRICS_CHARS)
    except RemoteError as exc:
        if exc.kind != "not-found":
            raise
        return MetricsSample(url=url, backend=backend, model=model, healthy=True,
                             error="no /metrics on this server: figures not exposed")
    return sample_from_prometheus(text, backend=backend, url=url, model=model)


def rate(prev: MetricsSample | None, cur: MetricsSample) -> float | None:
    """Generated tokens per second between two polls of one server: the slope of its counter. None when
    either poll lacks the counter, the counter went backwards (the server restarted) or no time passed."""
    if prev is None or prev.generated_total is None or cur.generated_total is None:
        return None
    dt = cur.t - prev.t
    delta = cur.generated_total - prev.generated_total
    if dt <= 0 or delta < 0:
        return None
    return delta / dt
