"""Learn 5.3 and 5.4 (issue 22) on the real SmolLM2: what an embedding is (the cosines of sentence pairs) and what
retrieval changes (the same question with and without the retrieved chunks). Every figure is re-computed here,
by another route: the cosines with an Embedder of the test's own, the retrieval with the index on disk, the
answer's probability token by token from the logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable

from tests.test_learn import experiments
from tui.app.screens.learn import ResultsScreen
from tui.engine import EngineSettings
from tui.engine.chat import chat_prompt
from tui.engine.embed import Embedder
from tui.learn import find, load_questions
from tui.learn.experiments.stage5_rag import OCTOPUS, PAIRS, sample_index
from tui.learn.headless import HeadlessHost
from tui.rag import SAMPLE_DOCS, augmented_message, open_index
from tui.sampling.presets import BUILTIN_PRESETS, load_presets


def test_the_questions_are_stage_5_and_in_the_readme() -> None:
    by_id = {q.id: q for q in load_questions()}
    assert (by_id["s5-embeddings"].number, by_id["s5-retrieval"].number) == ("5.3", "5.4")
    assert "`llama_get_embeddings_seq`" in by_id["s5-embeddings"].body
    assert len(by_id["s5-retrieval"].try_next) == 2
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learning path", 1)[1].split("\n## ", 1)[0]
    for q in (by_id["s5-embeddings"], by_id["s5-retrieval"]):
        assert f"| `{q.number}` `{q.id}` | {q.title}<br>{q.title_zh} |" in section


async def test_embeddings_and_retrieval_in_the_dashboard(smollm2_path: Path) -> None:
    seen = {}

    def check_pairs(app, f) -> None:
        assert isinstance(app.screen, ResultsScreen) and app.screen.query_one(DataTable).row_count == len(PAIRS)
        v = f.values
        kinds = [p["kind"] for p in v["pairs"]]
        related = [c for c, k in zip(v["cosines"], kinds) if k != "unrelated"]
        unrelated = [c for c, k in zip(v["cosines"], kinds) if k == "unrelated"]
        assert v["gap"] == pytest.approx(np.mean(related) - np.mean(unrelated))
        assert v["margin"] == pytest.approx(min(related) - max(unrelated))
        assert "weak embeddings" in v["kind"]  # a chat model's: said so
        if f.variant == 0:
            assert f"by {v['gap']:.3f} on average" in f.headline and "576 dimensions, mean pooling" in f.headline
            assert ("every related pair above every unrelated one" in f.headline) == (v["margin"] > 0)
            assert v["kind"] in f.headline
        else:
            assert f"last pooling: related above unrelated by {v['gap_last']:+.3f} on average, margin " \
                   f"{v['margin_last']:+.3f}" in f.headline and f"mean pooling: {v['gap']:+.3f}" in f.headline
            better = "last-token pooling" if v["margin_last"] > v["margin"] else "mean pooling"
            assert f"{better} separates them better here" in f.headline
            assert len(app.screen.query_one(DataTable).columns) == 5  # the pair, its sentences, two cosines
        seen[f.variant] = v

    def check_spider(app, f) -> None:
        v = f.values
        assert app.screen.query_one(DataTable).row_count == 5 + 3 + 3  # top-5, answer/moved/tokens, 3 chunks
        scores = [h["score"] for h in v["hits"]]
        assert [h["rank"] for h in v["hits"]] == [0, 1, 2] and scores == sorted(scores, reverse=True)
        assert v["answerable_first_source"] == "octopus.txt"  # the answerable question's best hit, for scale
        assert f"{v['hits'][0]['file']} first (cosine {v['first_score']:.3f}" in f.headline
        assert f"{v['p_answer'][0]:.1%} without retrieval → {v['p_answer'][1]:.1%} with k=3" in f.headline
        assert v["moved"][0] > 0 and v["top"][0] != v["top"][1]

    await experiments(smollm2_path, ("s5-embeddings", 0, check_pairs), ("s5-embeddings", 1, check_pairs),
                      ("s5-retrieval", 1, check_spider))
    # the cosines, re-computed with an embedder of our own: a pair embedded alone, as a batch of two
    for pooling, key in ((None, "cosines"), ("last", "cosines_last")):
        with Embedder(smollm2_path, pooling=pooling) as emb:
            for i in (0, 6):  # a paraphrase and an unrelated pair
                a, b = emb.embed_many([PAIRS[i][1], PAIRS[i][2]])
                assert seen[1][key][i] == pytest.approx(float(a @ b), abs=2e-3)
    assert seen[0]["cosines"] == seen[1]["cosines"]  # variation 1 adds a pooling; the first one stays


def _p(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    return np.exp(z) / np.exp(z).sum()


def p_answer_by_hand(eng, message: str) -> float:
    """P(" three" | " Three" | " " then "3") after "An octopus has", read from the logits step by step."""
    tokens = chat_prompt(eng, [{"role": "user", "content": message}])[1]
    tokens += eng.tokenize(OCTOPUS.answer_start, add_bos=False)
    eng.clear()
    eng.decode(tokens)
    p = _p(eng.logits())
    words = [eng.tokenize(w, add_bos=False) for w in (" three", " Three")]
    space, digit = eng.tokenize(" 3", add_bos=False)
    assert all(len(w) == 1 for w in words)
    eng.decode([space])
    after_space = _p(eng.logits())
    eng.clear()
    return float(sum(p[w[0]] for w in words) + p[space] * after_space[digit])


async def test_retrieval_headless_every_figure_recomputed(smollm2_path: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))  # a cache without an index yet
    host = HeadlessHost.load(smollm2_path, EngineSettings(n_ctx=512, seed=1), preset=BUILTIN_PRESETS["balanced"],
                             catalog=load_presets(None), quick=True)
    try:
        f0 = await host.run_question(find("s5-retrieval"))
        assert (f0.values["index_built"], f0.values["index_reused"], f0.values["chunks"]) == (10, 0, 10)
        f2 = await host.run_question(find("s5-retrieval"), 2)  # k=1 against k=3, on the index built above
        v = f2.values
        assert (v["index_built"], v["index_reused"]) == (0, 10)
        table = host.views[-1]
        assert table.columns == ["", "without retrieval", "with retrieval, k=1", "with retrieval, k=3"]
        assert len(table.rows) == 11 and table.rows[table.mark_row][0] == "P(answer: three / 3)"
        assert [r[0] for r in table.rows[8:]] == ["retrieved #1", "retrieved #2", "retrieved #3"]
        assert table.rows[9][2] == "" and table.rows[8][2] == table.rows[8][3]  # k=1: one chunk, the same first
        assert v["hits"] == f0.values["hits"] and v["p_answer"][2] == pytest.approx(f0.values["p_answer"][1])

        # retrieval, again: the index on disk searched with an embedder of our own
        index_dir = tmp_path / "cache" / "learn" / "sample-index" / f"{smollm2_path.stem}-mean"
        index = open_index(index_dir)
        assert index.manifest["chunking"]["size"] == 2000
        assert len(index.chunks) == len(list(SAMPLE_DOCS.iterdir()))  # one chunk per document
        with Embedder(smollm2_path) as emb:
            hits = index.search(emb.embed(OCTOPUS.question).vector, 3)
        assert hits[0].chunk.source == "octopus.txt" == v["first_source"]
        assert [h.chunk.source for h in hits] == [h["file"] for h in v["hits"]]
        assert [h.score for h in hits] == pytest.approx([h["score"] for h in v["hits"]], abs=1e-4)

        # the next-token figures, from the logits: without retrieval, with k=1 and with k=3
        def by_hand() -> tuple[list[float], list[int]]:
            messages = [OCTOPUS.question] + [augmented_message(OCTOPUS.question, hits[:k])[0] for k in (1, 3)]
            return ([p_answer_by_hand(host.engine, m) for m in messages],
                    [len(chat_prompt(host.engine, [{"role": "user", "content": m}])[1]) for m in messages])

        p_answer, n_tokens = await host.in_thread(by_hand)
        assert v["p_answer"] == pytest.approx(p_answer, rel=1e-3, abs=1e-6)
        assert v["tokens"] == n_tokens
        assert v["added_tokens"] == [n_tokens[1] - n_tokens[0], n_tokens[2] - n_tokens[0]]
        assert len(set(map(json.dumps, v["top"]))) == 3 and all(m > 0 for m in v["moved"])  # three distributions
        h = f0.headline
        assert h.startswith(f"retrieval put octopus.txt first (cosine {hits[0].score:.3f}) and added "
                            f"{n_tokens[2] - n_tokens[0]} prompt tokens")
        assert f"{p_answer[0]:.1%} without retrieval → {p_answer[2]:.1%} with k=3" in h
        k1 = f"k=1 added {n_tokens[1] - n_tokens[0]} prompt tokens, P(“three / 3”) {p_answer[1]:.1%}"
        assert f2.headline.startswith(k1)

        # a damaged index is built anew, not reported as the learner's problem
        (index_dir / "manifest.json").write_text("{not json", encoding="utf-8")

        def rebuilt():
            with Embedder(smollm2_path) as emb:
                return sample_index(emb, tmp_path / "cache")[1]

        assert (await host.in_thread(rebuilt)).files == 10
    finally:
        await host.aclose()
