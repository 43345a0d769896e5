"""The OpenAI-compatible API fuzzed from its own OpenAPI schema (schemathesis) on the real SmolLM2 model.

Whatever a client sends, valid or not, the server answers without a 5xx. The
runs are deterministic (derandomized hypothesis) and bounded: a fixed number of
cases per route and mode, every generation capped at a few tokens.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tui.engine.models import describe_file
from tui.sampling.presets import BUILTIN_PRESETS, load_presets
from tui.server import start_local

KEY = "fuzz-key"
MAX_TOKENS = 2  # a generated request may ask for a million tokens; the engine makes at most this many
EXAMPLES = 30  # cases per route and mode
ROUTES = [("GET", "/health"), ("GET", "/metrics"), ("GET", "/v1/models/{model_id}"), ("GET", "/tokenizer_info"),
          ("POST", "/tokenize"), ("POST", "/detokenize"), ("POST", "/v1/responses"), ("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")]


@pytest.fixture(scope="module")
def api(engine, smollm2_path):
    """A real server (with an API key) and the schema it serves."""
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["balanced"], seed=42,
                      port=0, api_key=KEY, max_tokens=MAX_TOKENS, models=lambda: [entry])
    base = srv.url.removesuffix("/v1")
    try:
        yield SimpleNamespace(schema=schemathesis.openapi.from_url(base + "/openapi.json", timeout=10), base=base,
                              model=entry.name)
    finally:
        srv.stop()


def _cheap(case: schemathesis.Case, model: str | None) -> schemathesis.Case:
    """The case with any valid token budget cut to MAX_TOKENS (invalid ones are left for the server to refuse)
    and, given ``model``, naming the loaded model, so that valid cases reach the engine."""
    body = case.body
    if isinstance(body, dict):
        if model is not None:
            body["model"] = model
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
                body[name] = MAX_TOKENS
        if case.operation.path == "/v1/completions" and body.get("max_tokens") is None:
            body["max_tokens"] = MAX_TOKENS  # the route's default is 16
    return case


def test_the_schema_lists_every_route(api) -> None:
    listed = sorted((op.ok().method.upper(), op.ok().path) for op in api.schema.get_all_operations())
    assert listed == sorted(ROUTES)


@pytest.mark.parametrize(("method", "path", "mode"), [
    *((m, p, GenerationMode.POSITIVE) for m, p in ROUTES),
    *((m, p, GenerationMode.NEGATIVE) for m, p in ROUTES if m == "POST"),
], ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_no_request_makes_a_server_error(api, method: str, path: str, mode: GenerationMode) -> None:
    strategy = api.schema[path][method].as_strategy(generation_mode=mode,
                                                    headers={"Authorization": f"Bearer {KEY}"})
    statuses: collections.Counter[int] = collections.Counter()
    model = api.model if mode is GenerationMode.POSITIVE else None

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy.map(lambda case: _cheap(case, model)))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=api.base, checks=[not_a_server_error], timeout=60)
        statuses[response.status_code] += 1

    run()
    assert statuses, "no case was sent"
    assert 401 not in statuses  # the key went with every case: the fuzzing reached the routes
    if mode is GenerationMode.POSITIVE and method == "POST":
        assert statuses[200], statuses  # valid cases reached the engine
