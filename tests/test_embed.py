"""Embeddings (issue 22, first part) through llama.cpp's embedding API, on the real SmolLM2: the pooled vector is
llama-cpp-python's own ``Llama.embed``'s; related sentences are closer than unrelated ones; retrieval over a small
labelled set (10 documents, 30 questions written for these tests) keeps a recall@3 floor; ``llmtui embed``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run
from tui.engine.embed import Embedder, cosine_matrix
from tui.rag import SAMPLE_DOCS

RAG = Path(__file__).parent / "fixtures" / "rag"


@pytest.fixture(scope="module")
def embedder(smollm2_path: Path):
    with Embedder(smollm2_path) as e:
        yield e


def test_the_pooled_vector_is_llama_cpps_own(embedder, smollm2_path: Path) -> None:
    import llama_cpp

    ref = llama_cpp.Llama(str(smollm2_path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          verbose=False, n_ctx=512)
    try:
        theirs = np.asarray(ref.embed("The cat sat on the mat."), dtype=np.float64)
    finally:
        ref.close()
    mine = embedder.embed("The cat sat on the mat.")
    assert mine.vector.shape == (embedder.n_embd,) == (576,) and abs(np.linalg.norm(mine.vector) - 1) < 1e-5
    assert float(mine.vector @ (theirs / np.linalg.norm(theirs))) > 0.995
    assert abs(mine.norm - np.linalg.norm(theirs)) / np.linalg.norm(theirs) < 0.05
    assert embedder.pooling == "mean" and not embedder.sentence_encoder and "weak" in embedder.kind


def test_related_sentences_are_closer_than_unrelated_ones(embedder) -> None:
    sims = cosine_matrix(embedder.embed_many(["The cat sat on the mat.", "A kitten is resting on a rug.",
                                              "Stock markets fell sharply today.", "Shares dropped on Wall Street."]))
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])
    assert np.allclose(np.diag(sims), 1.0, atol=1e-5) and np.allclose(sims, sims.T)


def ranks(embedder: Embedder) -> list[int]:
    """For each labelled question, the rank (0 = best) of its source document by cosine similarity."""
    docs = sorted(SAMPLE_DOCS.glob("*.txt"))
    names = [d.name for d in docs]
    questions = json.loads((RAG / "questions.json").read_text(encoding="utf-8"))
    scores = embedder.embed_many([q["q"] for q in questions]) @ embedder.embed_many(
        [d.read_text(encoding="utf-8") for d in docs]).T
    order = np.argsort(-scores, axis=1)
    return [int(np.nonzero(row == names.index(q["doc"]))[0][0]) for q, row in zip(questions, order)]


def test_retrieval_over_the_labelled_set_keeps_its_floor(embedder) -> None:
    # chance is 3 of 10; SmolLM2's mean-pooled states find the source in the top 3 for 26 of 30 questions here
    found = ranks(embedder)
    assert len(found) == 30
    assert np.mean([r < 3 for r in found]) >= 0.75  # recall@3
    assert np.mean([r < 1 for r in found]) >= 0.5  # recall@1


def test_the_embed_command_prints_the_similarities_and_says_what_made_them(tmp_path: Path) -> None:
    out = run("embed", "The cat sat on the mat.", "A kitten is resting on a rug.", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["dimensions"] == 576 and data["pooling"] == "mean" and "weak" in data["kind"]
    v = np.asarray([t["vector"] for t in data["texts"]])
    assert v.shape == (2, 576) and np.allclose(np.asarray(data["cosine"]), v @ v.T, atol=1e-4)
    human = run("embed", "one", "two", home=tmp_path)
    assert human.returncode == 0 and "cosine similarity" in human.stdout and "weak embeddings" in human.stdout
    bad = run("embed", "x", "--model", str(tmp_path / "missing.gguf"), home=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
