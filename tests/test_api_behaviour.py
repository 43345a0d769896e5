"""`llmtui serve` as front ends and agents use it (issue 20): a fresh seed when none is given, CORS for browser
clients, null where OpenAI accepts null, GET /v1/models/{id}, message.refusal — with the official `openai`
client against the real server on SmolLM2 (one server for the module, on the module's engine)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tui.engine.models import describe_file
from tui.sampling.presets import BUILTIN_PRESETS, load_presets
from tui.server import start_local

ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def api(engine, smollm2_path):
    """The server as `llmtui serve` starts it when the user set no seed, browser pages from ORIGIN allowed."""
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["balanced"], seed=None,
                      models=lambda: [entry], cors_origins=[ORIGIN], api_key="k3y")
    try:
        yield srv, entry.name
    finally:
        srv.stop()


@pytest.fixture()
def client(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=api[0].url, api_key="k3y", max_retries=0, timeout=120)


def call(url: str, method: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, _body(resp.read(), resp.headers), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc.read(), exc.headers), exc.headers


def _body(raw: bytes, headers: Any) -> Any:
    return json.loads(raw) if "json" in (headers.get("content-type") or "") else raw.decode()


def seed_of(fingerprint: str) -> int:
    found = re.search(r"seed(\d+)$", fingerprint)
    assert found, fingerprint
    return int(found.group(1))


def test_without_a_seed_each_request_samples_afresh_and_says_its_seed(client, api) -> None:
    model = api[1]
    ask = dict(model=model, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=24,
               temperature=1.0)
    answers = [client.chat.completions.create(**ask) for _ in range(3)]
    texts = [a.choices[0].message.content for a in answers]
    assert len(set(texts)) == 3, texts  # "regenerate" gives another answer
    seeds = [seed_of(a.system_fingerprint) for a in answers]
    assert len(set(seeds)) == 3
    again = client.chat.completions.create(**ask, seed=seeds[1])  # the seed it said reproduces the answer
    assert again.choices[0].message.content == texts[1]
    fixed = [client.chat.completions.create(**ask, seed=5).choices[0].message.content for _ in range(2)]
    assert fixed[0] == fixed[1]


def test_a_server_started_with_a_seed_uses_it_for_requests_without_one(engine, smollm2_path) -> None:
    entry = describe_file(smollm2_path, source="embedded")
    srv = start_local(engine, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["balanced"], seed=7,
                      models=lambda: [entry])
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=120)
        ask = dict(model=entry.name, prompt="Once upon a time", max_tokens=16, temperature=1.0)
        first, second = (c.completions.create(**ask) for _ in range(2))
        assert first.choices[0].text == second.choices[0].text and first.system_fingerprint.endswith("seed7")
    finally:
        srv.stop()


def test_a_browser_preflight_passes_without_the_key_and_the_answer_carries_cors(api) -> None:
    srv, model = api
    status, _, headers = call(srv.url + "/chat/completions", "OPTIONS", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    status, _, headers = call(srv.url + "/chat/completions", "POST", body, {"Origin": ORIGIN})
    assert status == 401  # the real request still needs the key
    status, answer, headers = call(srv.url + "/chat/completions", "POST", body,
                                   {"Origin": ORIGIN, "Authorization": "Bearer k3y"})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    status, error, headers = call(srv.url + "/chat/completions", "OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 400 and "access-control-allow-origin" not in headers  # an origin not allowed
    assert error["error"]["code"] == "cors_refused" and "origin" in error["error"]["message"]  # OpenAI's shape


def test_null_is_the_default_where_openai_accepts_null(api) -> None:
    srv, model = api
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": None,
            "n": None, "logprobs": None, "top_logprobs": None, "temperature": None, "stop": None, "seed": None,
            "stream_options": None}
    status, answer, _ = call(srv.url + "/chat/completions", "POST", body, {"Authorization": "Bearer k3y"})
    assert status == 200, answer
    assert answer["choices"][0]["message"]["refusal"] is None and answer["choices"][0]["logprobs"] is None
    body = {"model": model, "prompt": "Hi", "max_tokens": 2, "echo": None, "logprobs": None, "stream": None}
    status, answer, _ = call(srv.url + "/completions", "POST", body, {"Authorization": "Bearer k3y"})
    assert status == 200, answer


def test_a_model_is_retrieved_by_id(client, api) -> None:
    model = client.models.retrieve(api[1])
    assert model.id == api[1] and model.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found"


def tokenize(api, text: str) -> list[int]:
    """vLLM's /tokenize at the server's root (what lm-evaluation-harness calls)."""
    status, body, _ = call(api[0].url.removesuffix("/v1") + "/tokenize", "POST",
                           {"prompt": text, "add_special_tokens": False}, {"Authorization": "Bearer k3y"})
    assert status == 200, body
    return body["tokens"]


def complete(client, model: str, **kw: Any) -> Any:
    return client.completions.create(model=model, seed=1, extra_body={"preset": "greedy"}, **kw)


def test_logprobs_and_the_token_count_stop_where_the_text_stops(client, api) -> None:
    model = api[1]
    whole = complete(client, model, prompt="The capital of France is", max_tokens=8, logprobs=2)
    tokens = whole.choices[0].logprobs.tokens
    assert whole.choices[0].text.startswith(" Paris.\n\n") and tokens[:4] == [" Paris", ".", "\n", "\n"]
    for stop, text, kept in ((".", " Paris", 1), ("\n\n", " Paris.", 2), ("aris", " P", 1)):
        for stream in (False, True):
            if stream:
                chunks = list(complete(client, model, prompt="The capital of France is", max_tokens=8, logprobs=2,
                                       stop=stop, stream=True, stream_options={"include_usage": True}))
                got = "".join(c.choices[0].text for c in chunks if c.choices)
                lp = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
                usage = chunks[-1].usage
            else:
                answer = complete(client, model, prompt="The capital of France is", max_tokens=8, logprobs=2,
                                  stop=stop)
                got, lp, usage = answer.choices[0].text, answer.choices[0].logprobs.tokens, answer.usage
            assert got == text, (stop, stream)
            assert lp == tokens[:kept], (stop, stream)  # the stop string's tokens went with it
            assert usage.completion_tokens == kept, (stop, stream)


def test_partial_characters_are_bytes_in_legacy_logprobs_and_never_a_trailing_replacement(client, api) -> None:
    model = api[1]
    prompt = "I love you ❤️❤️❤️ ❤️❤️"  # SmolLM2 continues with ❤ as three byte tokens: e2 9d a4
    answer = complete(client, model, prompt=prompt, max_tokens=4, logprobs=3)
    lp = answer.choices[0].logprobs
    assert lp.tokens[:3] == ["bytes:\\xe2", "bytes:\\x9d", "bytes:\\xa4"]  # OpenAI's form, not three "\ufffd"
    assert all(len(top) == 3 for top in lp.top_logprobs)  # no two keys collapsed into one "\ufffd"
    assert answer.choices[0].text.startswith("❤")
    for n in (1, 2, 5):  # cut inside a character: the bytes of the half character are not sent as U+FFFD
        text = complete(client, model, prompt=prompt, max_tokens=n).choices[0].text
        assert "\ufffd" not in text, (n, text)
    assert complete(client, model, prompt=prompt, max_tokens=2).choices[0].text == ""


def test_n_choices_and_arrays_of_prompts_are_runs_of_their_own(client, api) -> None:
    model = api[1]
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me a story."}],
                                            max_tokens=12, temperature=1.0, n=3, seed=11)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len({c.message.content for c in answer.choices}) == 3  # each choice its own draw (seeds 11, 12, 13)
    one = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me a story."}],
                                         max_tokens=12, temperature=1.0, seed=11)
    assert one.choices[0].message.content == answer.choices[0].message.content  # choice 0 is seed 11's draw
    assert answer.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert 3 <= answer.usage.completion_tokens <= 36
    prompts = ["The capital of France is", "One, two, three,"]
    many = complete(client, model, prompt=prompts, max_tokens=4)
    assert [c.index for c in many.choices] == [0, 1]
    for prompt, choice in zip(prompts, many.choices):
        assert choice.text == complete(client, model, prompt=prompt, max_tokens=4).choices[0].text
    ids = tokenize(api, prompts[0])
    by_ids = complete(client, model, prompt=ids, max_tokens=4)  # a token-array prompt
    assert by_ids.choices[0].text == many.choices[0].text
    nested = complete(client, model, prompt=[ids, ids], max_tokens=4)
    assert [c.text for c in nested.choices] == [many.choices[0].text] * 2


def test_logit_bias_bans_and_forces_tokens(client, api) -> None:
    model = api[1]
    plain = complete(client, model, prompt="The capital of France is", max_tokens=1, logprobs=1)
    paris = plain.choices[0].logprobs.tokens[0]
    assert paris == " Paris"
    (paris_id,) = tokenize(api, paris)
    banned = complete(client, model, prompt="The capital of France is", max_tokens=1,
                      logit_bias={str(paris_id): -100})
    assert banned.choices[0].text != paris
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, model, prompt="x", max_tokens=1, logit_bias={"99999999": 5})
    assert err.value.body["param"] == "logit_bias"


def test_echo_scores_a_prompt_as_lm_evaluation_harness_asks(client, api) -> None:
    """lm_eval's local-completions sends echo, logprobs 1, max_tokens 1 and reads token_logprobs[ctx:-1] and
    whether each is the top_logprobs' best; max_tokens 0 scores the prompt alone."""
    model = api[1]
    prompt = "The capital of France is Paris"
    ids = tokenize(api, prompt)
    scored = complete(client, model, prompt=prompt, max_tokens=1, logprobs=1, echo=True)
    lp = scored.choices[0].logprobs
    assert scored.choices[0].text.startswith(prompt) and len(lp.token_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and lp.text_offset[0] == 0
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    paris = lp.token_logprobs[len(ids) - 1]
    assert paris == max(lp.top_logprobs[len(ids) - 1].values())  # " Paris" is the greedy answer, exactly
    only = complete(client, model, prompt=prompt, max_tokens=0, logprobs=1, echo=True)
    assert only.choices[0].text == prompt and only.usage.completion_tokens == 0
    assert only.choices[0].logprobs.token_logprobs == lp.token_logprobs[:-1]  # the same numbers, one pass
    with pytest.raises(openai.BadRequestError):
        complete(client, model, prompt=prompt, max_tokens=0)  # nothing to generate and nothing to score


def test_the_responses_api_answers_text_streamed_or_whole(client, api) -> None:
    model = api[1]
    whole = client.responses.create(model=model, input="What is the capital of France?", instructions="Be brief.",
                                    max_output_tokens=16, temperature=0, extra_body={"seed": 3})
    assert whole.status in ("completed", "incomplete") and whole.output_text
    chat = client.chat.completions.create(model=model, max_tokens=16, temperature=0, seed=3, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}])
    assert whole.output_text == chat.choices[0].message.content  # the same turn underneath
    assert whole.usage.output_tokens == chat.usage.completion_tokens
    events = list(client.responses.create(model=model, input=[{"role": "user", "content": "Say hi."}],
                                          max_output_tokens=8, stream=True, extra_body={"seed": 3}))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert deltas == done.text and deltas == events[-1].response.output_text
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, input="x", tools=[{"type": "function", "name": "f", "parameters": {}}])
    assert err.value.body["param"] == "tools"


# types, required fields, enums: what llama-cpp-python's schema converter puts in the grammar (numeric ranges
# such as minimum/maximum it does not: the README says so)
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "mood": {"enum": ["happy", "sad"]}},
          "required": ["name", "age", "mood"], "additionalProperties": False}


def grammar_stages(api, run) -> list[Any]:
    """The grammar stage of each step the server's engine ran for ``run()`` (the controller's own events)."""
    from tui.engine.controller import StepEvent

    srv = api[0]
    seen: list[Any] = []
    before = srv.controller.emit
    srv.controller.emit = lambda ev: seen.append(ev) if isinstance(ev, StepEvent) and not ev.pending else None
    try:
        run()
    finally:
        srv.controller.emit = before
    return [next((s for s in ev.step.trace.stages if s.name == "grammar"), None) for ev in seen]


def test_response_format_json_schema_is_enforced_by_a_grammar_stage_you_can_see(client, api) -> None:
    import jsonschema

    model = api[1]
    answers = []
    stages = grammar_stages(api, lambda: answers.append(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Invent a person."}], max_tokens=60, seed=4,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})))
    (answer,) = answers
    person = json.loads(answer.choices[0].message.content)
    jsonschema.validate(person, PERSON)
    assert stages and all(s is not None for s in stages)  # every step went through the grammar
    assert all(s.n_out < s.n_in for s in stages) and any(s.mass_removed > 0 for s in stages)
    obj = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Give a JSON object."}],
                                         max_tokens=40, seed=4, response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict) or obj.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "sound"})
    assert err.value.body["param"] == "response_format.type"
    with pytest.raises(openai.BadRequestError) as err:  # raw GBNF: only with --allow-grammar
        client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"grammar": 'root ::= "a"'})
    assert err.value.body["param"] == "grammar"
    done = client.completions.create(model=model, prompt="Answer yes or no: is the sky blue?", max_tokens=8, seed=1,
                                     extra_body={"preset": "greedy",
                                                 "json_schema": {"type": "string", "enum": ["yes", "no"]}})
    assert json.loads(done.choices[0].text) in ("yes", "no")  # llama-server's json_schema field


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string",
                                                                                   "maxLength": 20}},
                                                           "required": ["city"]}}}


def test_tools_come_back_as_tool_calls_streamed_or_not(client, api) -> None:
    model = api[1]
    ask = dict(model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}], max_tokens=40,
               seed=2, tools=[WEATHER], tool_choice="required")
    answer = client.chat.completions.create(**ask)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**{**ask, "tool_choice": {"type": "function", "function": {"name": "nope"}}})


def test_langchain_structured_output_and_tools(api) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=api[0].url, api_key="k3y", model=api[1], max_tokens=60, seed=4, max_retries=0,
                     timeout=120)
    person = llm.with_structured_output(Person).invoke("Invent a person.")
    assert isinstance(person, Person) and person.name and isinstance(person.age, int)
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def test_tools_go_to_a_template_that_takes_them_else_to_a_system_note() -> None:
    from types import SimpleNamespace

    from tui.server.service import GenRequest, Service
    from tui.server.structured import tool_structure

    seen: dict[str, Any] = {}

    class Stub:
        template_takes_tools = True
        info = SimpleNamespace(bos=-1)

        def render_chat(self, messages, *, add_generation_prompt=True, tools=None):
            seen["messages"], seen["tools"] = messages, tools
            return "rendered"

        def tokenize(self, text, **kw):
            return [1, 2, 3]

    structure = tool_structure([WEATHER], "required")
    req = GenRequest(kind="chat", model="m", preset=BUILTIN_PRESETS["greedy"], seed=1, max_tokens=4,
                     messages=({"role": "user", "content": "Weather?"},), structure=structure)
    service = Service(lambda: None)
    service._prompt(SimpleNamespace(engine=Stub()), req)
    assert seen["tools"][0]["function"]["name"] == "get_weather" and len(seen["messages"]) == 1  # its own way
    Stub.template_takes_tools = False
    service._prompt(SimpleNamespace(engine=Stub()), req)
    assert seen["tools"] is None and seen["messages"][0]["role"] == "system"
    assert "get_weather" in seen["messages"][0]["content"]  # told in a system message instead
