"""Indexing and retrieval (issue 22, first part): chunking, a local index of the labelled set built with llama.cpp
embeddings on the real SmolLM2, resuming after a cancel, bad input in one line each, ``llmtui index``."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run
from tui.engine.embed import Embedder
from tui.rag import SAMPLE_DOCS
from tui.rag import IndexError_, build_index, chunk_text, open_index

RAG = Path(__file__).parent / "fixtures" / "rag"
WHOLE = 2000  # characters: each labelled document is one chunk


@pytest.fixture(scope="module")
def embedder(smollm2_path: Path):
    with Embedder(smollm2_path) as e:
        yield e


def test_chunks_cover_the_text_at_word_boundaries_with_the_overlap_asked() -> None:
    text = (SAMPLE_DOCS / "aqueduct.txt").read_text(encoding="utf-8")
    chunks = chunk_text(text, "a.txt", size=120, overlap=30)
    assert all(len(c.text) <= 120 for c in chunks) and chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end and a.end - b.start <= 30  # neighbours share at most the overlap
        assert text[b.start - 1] == " "  # a chunk begins at a word
    with pytest.raises(ValueError, match="overlap must be"):
        chunk_text(text, "a.txt", size=100, overlap=100)


def test_an_index_of_the_labelled_set_retrieves_the_source_and_resumes(embedder, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    seen: list[tuple[int, int, int, str]] = []
    report = build_index(SAMPLE_DOCS, embedder, out, size=WHOLE, overlap=0, on_progress=lambda *a: seen.append(a))
    assert (report.files, report.chunks, report.kept, report.skipped, report.cancelled) == (10, 10, 0, [], False)
    assert seen[-1][:2] == (10, 10)
    index = open_index(out)
    assert index.vectors.shape == (10, 576) and index.model["pooling"] == "mean"
    questions = json.loads((RAG / "questions.json").read_text(encoding="utf-8"))
    found = [any(h.chunk.source == q["doc"] for h in index.search(embedder.embed(q["q"]).vector, 3))
             for q in questions]
    assert np.mean(found) >= 0.75  # recall@3 through the index: the same floor as the bare embeddings
    again = build_index(SAMPLE_DOCS, embedder, out, size=WHOLE, overlap=0)
    assert (again.kept, again.files, again.new_chunks, again.chunks) == (10, 0, 0, 10)  # nothing re-embedded
    with pytest.raises(IndexError_, match="--rebuild to change them"):
        build_index(SAMPLE_DOCS, embedder, out, size=500, overlap=0)


def test_a_cancelled_index_resumes_where_it_stopped(embedder, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    cancel = threading.Event()

    def progress(done: int, total: int, chunks: int, name: str) -> None:
        if chunks >= 3:
            cancel.set()

    first = build_index(SAMPLE_DOCS, embedder, out, size=WHOLE, overlap=0, cancel=cancel, on_progress=progress)
    assert first.cancelled and 0 < first.chunks < 10 and len(open_index(out).chunks) == first.chunks
    second = build_index(SAMPLE_DOCS, embedder, out, size=WHOLE, overlap=0)
    assert not second.cancelled and second.kept == first.files and second.chunks == 10
    assert second.new_chunks == 10 - first.chunks


def test_bad_input_is_one_clear_line(embedder, tmp_path: Path, smollm2_q8_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IndexError_, match="nothing to index"):
        build_index(empty, embedder, tmp_path / "o1")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(SAMPLE_DOCS / "coffee.txt", mixed)
    (mixed / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(64))
    (mixed / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with open(mixed / "huge.log", "wb") as f:
        f.truncate(50 << 20)  # 50 MB (sparse: nothing is written)
    report = build_index(mixed, embedder, tmp_path / "o2", size=WHOLE, overlap=0)
    why = dict(report.skipped)
    assert report.files == 1 and set(why) == {"image.png", "latin1.txt", "huge.log"}
    assert "binary" in why["image.png"] and "not UTF-8" in why["latin1.txt"] and "50.0 MiB" in why["huge.log"]
    with Embedder(smollm2_q8_path) as other:  # another embedding model: its vectors live in another space
        with pytest.raises(IndexError_, match="cannot be compared"):
            open_index(tmp_path / "o2").check_model(other)
    damaged = tmp_path / "o2"
    (damaged / "vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(IndexError_, match="damaged index"):
        open_index(damaged)
    with pytest.raises(IndexError_, match="no index here"):
        open_index(tmp_path / "nowhere")


def test_the_index_command_builds_and_answers(tmp_path: Path) -> None:
    out = tmp_path / "ix"
    done = run("index", str(SAMPLE_DOCS), "--out", str(out), "--chunk-size", str(WHOLE), "--overlap", "0", "--json",
               home=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["chunks"] == 10 and data["skipped"] == [] and "weak" in data["kind"]
    asked = run("index", str(SAMPLE_DOCS), "--out", str(out), "--query", "How many hearts does an octopus have?",
                "--json", home=tmp_path)
    assert asked.returncode == 0, asked.stderr
    hits = json.loads(asked.stdout)["hits"]
    assert len(hits) == 3 and hits[0]["file"] == "octopus.txt" and hits[0]["score"] >= hits[1]["score"]
    bad = run("index", str(tmp_path / "nope"), home=tmp_path)
    assert bad.returncode == 2 and "not a directory" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_retrieval_augmented_turn_carries_its_chunks_into_the_prompt_and_the_recording(
        embedder, tmp_path: Path) -> None:
    from tui.engine import EngineSettings
    from tui.engine.controller import Controller
    from tui.engine.fake import FakeEngine
    from tui.rag import Retriever
    from tui.record import SessionWriter, read_session
    from tui.record.recorder import Recorder
    from tui.sampling.presets import BUILTIN_PRESETS

    out = tmp_path / "ix"
    build_index(SAMPLE_DOCS, embedder, out, size=WHOLE, overlap=0)
    retriever = Retriever(out, k=2)
    try:
        got = retriever.retrieve("How many hearts does an octopus have?")
    finally:
        retriever.close()
    assert [h.rank for h in got.hits] == [0, 1] and got.hits[0].chunk.source == "octopus.txt"
    start, end = got.context_span
    assert got.hits[0].chunk.text in got.message[start:end] and got.message.endswith(
        "Question: How many hearts does an octopus have?")
    eng = FakeEngine(EngineSettings(n_ctx=512, seed=7))
    path = tmp_path / "rag.jsonl"
    ctl = Controller(eng, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda e: None, max_tokens=3)
    ctl.listeners.append(Recorder(eng, lambda header: SessionWriter(path, header, eng.piece)))
    ctl.run(got.message, retrieved=got)
    s = read_session(path)
    assert s.problems == [] and s.header["retrieval"] == json.loads(json.dumps(got.as_dict()))
    assert [c["file"] for c in s.header["retrieval"]["chunks"]] == [h.chunk.source for h in got.hits]
    bad = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    bad["retrieval"]["chunks"][0]["score"] = "high"
    lines = path.read_text(encoding="utf-8").splitlines()
    (tmp_path / "bad.jsonl").write_text("\n".join([json.dumps(bad), *lines[1:]]) + "\n", encoding="utf-8")
    from tui.record import SessionFileError

    with pytest.raises(SessionFileError, match=r"retrieval.chunks\[0\].score"):
        read_session(tmp_path / "bad.jsonl")
