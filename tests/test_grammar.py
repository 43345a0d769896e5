"""Structured output: the chain's grammar stage on llama.cpp's own grammar engine (real SmolLM2), and the
stage itself on a fake grammar (no llama.cpp)."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import numpy as np
import pytest

from tui.engine import EngineError, Generation, StopReason
from tui.engine.grammar import JSON_GBNF, Grammar, check_gbnf, gbnf_from_json_schema
from tui.sampling import Chain, Greedy, TopK
from tui.sampling.errors import SamplingError
from tui.sampling.presets import BUILTIN_PRESETS, BuildContext
from tui.sampling.samplers.grammar import GrammarStage

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def constrained(engine, grammar: Grammar, question: str, max_tokens: int, preset: str = "greedy") -> Generation:
    """A chat turn generated through the real loop, with ``grammar`` in the chain's build context."""
    engine.clear()
    prompt = engine.tokenize(engine.render_chat([{"role": "user", "content": question}]), parse_special=True)
    ctx = dataclasses.replace(engine.build_context(1), grammar=grammar)
    gen = Generation(engine, prompt, BUILTIN_PRESETS[preset].build(ctx), max_tokens=max_tokens)
    gen.steps = list(gen)  # type: ignore[attr-defined]
    return gen


# -- on llama.cpp's grammar engine ------------------------------------------------------------------------


def test_a_tiny_grammar_decides_the_answer_and_the_trace_shows_it(engine) -> None:
    grammar = Grammar(engine, 'root ::= "yes" | "no"')
    gen = constrained(engine, grammar, "Is the sky blue? Answer yes or no.", max_tokens=8)
    assert gen.stats.text in ("yes", "no")
    assert gen.stats.stop_reason is StopReason.EOG  # once the grammar is complete, only end-of-generation is left
    for step in gen.steps:
        first = step.trace.stages[0]
        assert first.name == "grammar"
        assert first.n_in == engine.n_vocab and 0 < first.n_out < first.n_in
        assert 0.0 < first.mass_removed < 1.0
    assert gen.steps[-1].is_eog
    # the template the build context carried is untouched: every chain works on its own copy
    assert grammar.allows(engine.tokenize("yes", add_bos=False)[0])


def test_a_json_schema_gives_json_that_validates(engine) -> None:
    grammar = Grammar.from_json_schema(engine, PERSON)
    gen = constrained(engine, grammar, "Write a JSON object for a person called Ann who is 30 years old.",
                      max_tokens=40, preset="llama.cpp-default")
    assert gen.stats.stop_reason is StopReason.EOG, gen.stats.text
    jsonschema.validate(json.loads(gen.stats.text), PERSON)
    assert all(s.trace.stages[0].name == "grammar" for s in gen.steps)
    assert any(s.trace.stages[0].n_out < 10 for s in gen.steps)  # structure: a handful of tokens fit


def test_json_object_grammar_and_schema_conversion_are_accepted(engine) -> None:
    assert check_gbnf(JSON_GBNF) is None
    Grammar(engine, JSON_GBNF).close()
    schemas = [{"type": "array", "items": {"type": "number"}, "maxItems": 3}, {"enum": ["red", "green"]},
               {"type": "string", "pattern": "^[a-z]+$"}, {"anyOf": [{"type": "null"}, {"type": "boolean"}]}]
    for schema in schemas:
        Grammar.from_json_schema(engine, schema).close()


@pytest.mark.parametrize("gbnf, reason", [
    ("", "empty"),
    ("root ::= foo", "'foo' is used but never defined"),
    ('start ::= "a"', "no rule named 'root'"),
    ('root ::= "a', "unterminated"),
    ('root ::= "a" )', "llama.cpp refused it"),  # past our check: llama.cpp returns NULL
    ('root ::= "ab"{3,1}', "maximum below its minimum"),  # llama.cpp's parser would eat all memory
    ('root ::= "' + "x" * 5000 + '"{1999}', "expands to more than"),  # gigabytes of rules
    ('root ::= "' + "x" * 2000 + '"{40}{40}', "expands to more than"),  # the second copies the first's 40
    ("root ::= [a-z]{2001}", "limit of 2,000"),
    ("root ::= [a-z]{" + "9" * 5000 + "}", "too large"),
])
def test_a_bad_grammar_is_one_line_engine_error(engine, gbnf: str, reason: str) -> None:
    with pytest.raises(EngineError) as err:
        Grammar(engine, gbnf)
    msg = str(err.value)
    assert msg.startswith("grammar: ") and reason in msg and "\n" not in msg


def test_a_json_string_holds_no_raw_newline(engine) -> None:
    """RFC 8259: control characters in a string are escaped; the converter's loose rule let a newline in and a
    small model then wandered on inside an unclosed string (seen from the API with the balanced preset)."""
    g = Grammar(engine, gbnf_from_json_schema({"type": "object", "properties": {"name": {"type": "string"}}}))
    for tok in engine.tokenize('{"name": "Ada', add_bos=False):
        g.accept(tok)
    newline, letter, quote = (engine.tokenize(t, add_bos=False)[0] for t in ("\n", "b", '"'))
    assert g.allowed(np.array([newline, letter, quote])).tolist() == [False, True, True]
    g.close()


def test_a_bad_json_schema_is_one_line_engine_error() -> None:
    with pytest.raises(EngineError) as err:
        gbnf_from_json_schema({"$ref": "https://example.com/remote.json"})
    assert str(err.value).startswith("grammar: cannot convert the JSON schema") and "\n" not in str(err.value)


def test_accepting_a_token_the_grammar_rejects_is_refused_not_a_crash(engine) -> None:
    grammar = Grammar(engine, 'root ::= "yes" | "no"')
    bad = engine.tokenize(" maybe", add_bos=False)[0]
    eog = engine.info.eos
    assert not grammar.allows(bad) and not grammar.allows(eog)  # nothing is complete yet
    with pytest.raises(EngineError, match="not allowed here"):
        grammar.accept(bad)
    with pytest.raises(EngineError, match="not allowed here"):
        grammar.accept(eog)  # llama.cpp would abort the process on either
    with pytest.raises(EngineError, match="outside the vocabulary"):
        grammar.allowed(np.array([engine.n_vocab]))
    yes = engine.tokenize("yes", add_bos=False)
    copy = grammar.clone()
    for tok in yes:
        grammar.accept(tok)
    assert grammar.allows(eog) and not copy.allows(eog)  # clones are independent
    grammar.reset()
    assert not grammar.allows(eog) and grammar.allows(yes[0])
    grammar.close()
    with pytest.raises(EngineError, match="closed"):
        grammar.allows(yes[0])


# -- the stage, on a fake grammar ---------------------------------------------------------------------


class FakeGrammar:
    """Allows the ids in ``script[position]``; ``accept`` moves on (it refuses what it did not allow)."""

    def __init__(self, script: list[set[int]]) -> None:
        self.script, self.position = script, 0

    def allowed(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return np.isin(ids, list(self.script[self.position]))

    def accept(self, token: int) -> None:
        assert token in self.script[self.position], token
        self.position += 1

    def reset(self) -> None:
        self.position = 0

    def clone(self) -> "FakeGrammar":
        other = FakeGrammar(self.script)
        other.position = self.position
        return other


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def test_stage_masks_what_the_grammar_rejects_and_traces_the_removed_mass() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, 50_000).astype(np.float32)
    allowed = {7, 123, 4_567, 49_999}
    fake = FakeGrammar([allowed, {1}])
    chain = Chain([GrammarStage(fake), TopK(2), Greedy()])
    tr = chain.sample(logits)
    grammar, top_k, _ = tr.stages
    p = softmax(logits)
    ids = np.array(sorted(allowed))
    assert tr.token == ids[np.argmax(logits[ids])]
    assert (grammar.name, grammar.n_in, grammar.n_out) == ("grammar", 50_000, 4)
    assert grammar.mass_removed == pytest.approx(1 - p[ids].sum(), abs=1e-6)
    assert grammar.note == "49,996 rejected"
    assert set(grammar.top_ids[:4]) == allowed and grammar.top_probs[4:] == (0.0,)  # the fifth best is masked
    assert sum(grammar.top_probs) == pytest.approx(1.0)
    assert top_k.n_out == 2 and set(top_k.top_ids) <= allowed
    chain.accept(tr.token)
    assert fake.position == 1
    chain.reset()
    assert fake.position == 0


def test_stage_keeps_the_head_so_top_k_still_picks_the_best_allowed() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, 50_000).astype(np.float32)
    best = np.argsort(-logits, kind="stable")
    allowed = set(best[:300:3].tolist())  # every third of the best, some inside the chain's head of 128
    tr = Chain([GrammarStage(FakeGrammar([allowed])), TopK(20), Greedy()]).sample(logits)
    assert list(tr.stages[1].top_ids) == best[:300:3][:5].tolist()
    assert tr.token == best[0]


def test_stage_with_nothing_allowed_is_a_sampling_error() -> None:
    chain = Chain([GrammarStage(FakeGrammar([{5}])), Greedy()])
    logits = np.zeros(10, np.float32)
    logits[5] = -np.inf  # e.g. --ignore-eos removed the only token the grammar allows
    with pytest.raises(SamplingError, match="grammar allows none"):
        chain.sample(logits)


def test_presets_put_the_grammar_first_on_a_copy_and_replay_what_was_seen() -> None:
    template = FakeGrammar([{1, 2}, {3}, {4}])
    ctx = BuildContext(n_vocab=8, seed=1, grammar=template)
    chain = BUILTIN_PRESETS["llama.cpp-default"].build(ctx, seen=[2])
    assert chain.names == ["grammar", "top_k", "top_p", "min_p", "temp", "dist"]
    assert template.position == 0 and chain.samplers[0].grammar.position == 1
    tr = chain.sample(np.arange(8, dtype=np.float32))
    assert tr.token == 3  # the only one allowed after 2
    # a request's grammar can ride on the preset instead of the build context; edits keep it
    preset = BUILTIN_PRESETS["balanced"].with_grammar(template).with_param("temp", "t", 0.5)
    assert preset.grammar is template and preset == BUILTIN_PRESETS["balanced"].with_param("temp", "t", 0.5)
    assert preset.build(BuildContext(n_vocab=8)).names[0] == "grammar"
    assert BUILTIN_PRESETS["balanced"].build(BuildContext(n_vocab=8)).names[0] != "grammar"
    assert "grammar" not in preset.as_toml()
    clone = chain.clone()
    clone.accept(3)
    assert chain.samplers[0].grammar.position == 1  # a clone's grammar is its own
