"""The RAG lab and retrieval-augmented chat in the dashboard (issue 22): retrieval needs a real embedder (SmolLM2's
mean-pooled states, one index of the sample documents per module), the chat model is the fake engine."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.conftest import make_app, ready, until
from tui.app.rag_host import retrieval_cost, retrieved_span
from tui.app.screens.rag import RagLab
from tui.app.widgets.panels import ChainTrace, RetrievedChunks
from tui.app.widgets.token_stream import TokenStream, display_text
from tui.rag import SAMPLE_DOCS
from tui.rag.index import default_index_dir as default_index
from tui.units import human_bytes

TEMPLATE = "{{ messages }}"  # the fake engine renders chats itself; any template makes chat possible
QUESTION = "How many hearts does an octopus have?"


@pytest.fixture(scope="module")
def sample_root(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index root holding the sample documents' index (chunks of 2000 characters: one per document)."""
    from tui.engine.embed import Embedder
    from tui.rag import build_index

    root = tmp_path_factory.mktemp("indexes")
    with Embedder(smollm2_path) as embedder:
        report = build_index(SAMPLE_DOCS, embedder, default_index(SAMPLE_DOCS, root), size=2000, overlap=100)
    assert report.chunks == 10 and not report.skipped
    return root


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def open_lab(pilot, root: Path) -> RagLab:
    app = pilot.app
    app.rag.index_root = root
    await ready(pilot)
    app.query_one(TokenStream).focus()  # the prompt box holds the focus in chat mode: R would be typed there
    await pilot.press("R")
    await until(pilot, lambda: isinstance(app.screen, RagLab))
    lab = app.screen
    await until(pilot, lambda: "index " in lab.text_of("#info") and "…" not in lab.text_of("#info"), timeout=30)
    return lab


async def build(pilot, lab: RagLab, *, timeout: float = 60) -> None:
    ended = lab.builds_ended
    await pilot.press("ctrl+b")
    await until(pilot, lambda: lab.builds_ended > ended, timeout=timeout)


# -- the lab ------------------------------------------------------------------------------------------------


async def test_building_the_sample_documents_in_the_lab_shows_the_report_and_the_model(tmp_path) -> None:
    app = make_app(chat_template=TEMPLATE)
    async with app.run_test(size=(160, 48)) as pilot:
        lab = await open_lab(pilot, tmp_path)
        assert "not built yet" in lab.text_of("#info")
        assert "weak embeddings" in lab.text_of("#info")  # the build's model is SmolLM2: the warning is shown at once
        size = lab.query_one("#size", Input)
        size.value = "2000"
        size.focus()
        await pilot.press("enter")  # Enter in the form builds, as ctrl+b and the Build button do
        await until(pilot, lambda: lab.builds_ended == 1, timeout=60)
        report = lab.text_of("#report")
        assert "built: 10 chunks from 10 files" in report, report
        assert "10 files embedded now: 10 chunks in" in report and "chunks/s" in report
        assert lab.report.chunks == 10 and lab.report.chunks_per_s > 0
        info = lab.text_of("#info")
        assert "10 chunks from 10 files" in info and "built with SmolLM2" in info and "weak embeddings" in info
        assert (default_index(SAMPLE_DOCS, tmp_path) / "manifest.json").exists()


async def test_a_query_in_the_lab_lists_the_octopus_document_first(sample_root) -> None:
    app = make_app(chat_template=TEMPLATE)
    async with app.run_test(size=(160, 48)) as pilot:
        lab = await open_lab(pilot, sample_root)
        assert "10 chunks from 10 files" in lab.text_of("#info")
        assert lab.query_one("#size", Input).value == "2000"  # the index's own chunking: Build adds to it as is
        lab.query_one("#query", Input).value = QUESTION
        lab.query_one("#query", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: lab.retrieved is not None, timeout=30)
        hits = lab.retrieved.hits
        assert [h.chunk.source for h in hits][0] == "octopus.txt" and len(hits) == 3
        assert hits[0].score > hits[1].score >= hits[2].score
        shown = lab.text_of("#hits-text")
        assert f"[1] {hits[0].score:.3f}  octopus.txt" in shown and "three hearts" in shown
        retriever = app.rag._retriever  # loaded once and kept: a second query does not load the model again
        lab.query_one("#query", Input).value = "Why do bees make honey?"
        lab.retrieved = None
        await pilot.press("enter")
        await until(pilot, lambda: lab.retrieved is not None, timeout=30)
        assert app.rag._retriever is retriever and lab.retrieved.hits[0].chunk.source == "beekeeping.txt"


# -- retrieval-augmented chat -------------------------------------------------------------------------------


async def test_use_in_chat_retrieves_before_the_turn_and_shows_the_chunks_and_what_they_cost(sample_root) -> None:
    app = make_app(chat_template=TEMPLATE, max_tokens=12)
    async with app.run_test(size=(200, 50)) as pilot:
        await open_lab(pilot, sample_root)
        await pilot.press("ctrl+t")  # use in chat
        await until(pilot, lambda: app.screen is app.dashboard)
        status = app.query_one("#status")
        assert app.rag.on and app.chat_mode and "RAG sample (k=3; U: off, R: lab)" in status.text
        chunks, trace = app.query_one(RetrievedChunks), app.query_one(ChainTrace)
        assert chunks.display and not trace.display  # the chunks take the sampler chain's place
        prompt = app.query_one("#prompt", Input)
        prompt.value = QUESTION
        prompt.focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.current.retrieved is not None and app.current.phase.value == "stopped",
                    timeout=30)
        run = app.current
        retrieved = run.retrieved
        assert retrieved.question == QUESTION and [h.chunk.source for h in retrieved.hits][0] == "octopus.txt"
        users = [m["content"] for m in app.controller.chat.messages if m["role"] == "user"]
        assert users == [retrieved.message]  # the conversation keeps the augmented turn
        # the prompt shown is the rendered conversation: it holds the retrieved text, shaded apart from the question
        start, end = retrieved.context_span
        stream = app.query_one(TokenStream)
        assert display_text(retrieved.message) in stream.prompt()
        assert stream.retrieved() == display_text(retrieved.message[start:end])
        assert QUESTION not in stream.retrieved() and "octopus.txt" in stream.retrieved()
        assert retrieved_span(run.prompt, retrieved) is not None
        # the chunks panel lists them with their scores
        assert chunks.rows[0].startswith("top 3 of 10 chunks") and "weak embeddings" in chunks.rows[1]
        assert chunks.rows[2:] == [f"[{h.rank + 1}] {h.score:.3f} {h.chunk.source}" for h in retrieved.hits]
        # what the retrieved context costs: its tokens in the chat model, their KV bytes, its prompt time share
        tokens = len(app.engine.tokenize(retrieved.message[start:end], add_bos=False))
        per_token = app.engine.kv_layout().bytes_per_token
        cost = app.rag.cost_for(app.dashboard)
        assert cost.tokens == tokens and cost.kv_bytes == tokens * per_token
        assert run.n_prompt > tokens and cost.prompt_ms == pytest.approx(run.prompt_ms * tokens / run.n_prompt)
        assert f"retrieved {tokens:,} tok = {human_bytes(tokens * per_token)} KV" in status.text
        assert cost == retrieval_cost(tokens, per_token, run.prompt_ms, run.n_prompt)

        # U: retrieval off, the next question is a plain chat turn (the fake's 512 cells hold one augmented turn)
        first_run = run.run_id
        app.set_context_policy("drop-oldest-turns", -1)
        app.query_one(TokenStream).focus()
        await pilot.press("U")
        assert not app.rag.on and "RAG" not in status.text
        assert trace.display and not chunks.display
        prompt.value = "hello there"
        prompt.focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.current.run_id != first_run and app.current.phase.value == "stopped")
        assert app.current.retrieved is None and app.rag.cost_for(app.dashboard) is None
        users = [m["content"] for m in app.controller.chat.messages if m["role"] == "user"]
        assert users[-1] == "hello there" and stream.retrieved() == "" and "retrieved" not in status.text
        await pilot.press("escape", "U")  # and on again: the same index
        assert app.rag.on and "RAG sample" in status.text


async def test_retrieval_needs_an_index_and_a_model_that_can_chat(sample_root) -> None:
    app = make_app()  # no chat template: raw completion only
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("U")
        assert any("no index in use: R opens the RAG lab" in n for n in notes(app))
        lab = await open_lab(pilot, sample_root)
        await pilot.press("ctrl+t")
        assert app.screen is lab and not app.rag.on  # it stays open: the model cannot chat
        assert any("needs a model with a chat template" in n for n in notes(app))


# -- cancelling, resuming, bad input ----------------------------------------------------------------------------


async def test_a_cancelled_build_says_so_and_the_next_build_resumes(tmp_path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)
    app = make_app(chat_template=TEMPLATE)
    held = threading.Event()  # the build waits after its first file's chunks until esc was pressed
    build_for_real = app.rag.build

    def held_build(*args, on_progress, **kw):
        def progress(done: int, total: int, chunks: int, name: str) -> None:
            on_progress(done, total, chunks, name)
            if name and done == 0:
                held.wait(30)

        return build_for_real(*args, on_progress=progress, **kw)

    app.rag.build = held_build
    async with app.run_test(size=(160, 48)) as pilot:
        lab = await open_lab(pilot, tmp_path / "indexes")
        lab.query_one("#dir", Input).value = str(docs)
        lab.query_one("#size", Input).value = "2000"
        await pilot.press("ctrl+b")
        await until(pilot, lambda: "files ·" in lab.text_of("#progress"), timeout=30)
        await pilot.press("escape")  # cancels the build; it does not close the lab
        assert "cancelling" in lab.text_of("#progress")
        held.set()
        await until(pilot, lambda: not lab.building, timeout=30)
        first = lab.report
        assert app.screen is lab and first.cancelled and first.files == 1 and first.chunks == 1
        report = lab.text_of("#report")
        assert "cancelled: 1 chunks of 1 files are saved" in report and "Build again resumes" in report
        await build(pilot, lab)
        second = lab.report
        assert not second.cancelled and (second.kept, second.files, second.chunks) == (1, 9, 10)
        assert "9 files embedded now" in lab.text_of("#report") and "1 files kept from before (resumed)" in \
            lab.text_of("#report")
        await pilot.press("escape")  # nothing runs: esc closes
        await until(pilot, lambda: app.screen is app.dashboard)


async def test_bad_input_shows_one_line_and_nothing_crashes(sample_root, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (mixed / "note.txt").write_text("The lighthouse \x1b[31mkeeper\x1b[0m lit the lamp at dusk.", encoding="utf-8")
    # an index the sample documents' model did not build: its fingerprint is another model's
    other = tmp_path / "indexes" / "sample"
    shutil.copytree(default_index(SAMPLE_DOCS, sample_root), other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["fingerprint"] = "0" * 16
    manifest["model"]["name"] = "another-model"
    (other / "manifest.json").write_text(json.dumps(manifest))
    app = make_app(chat_template=TEMPLATE)
    async with app.run_test(size=(160, 48)) as pilot:
        lab = await open_lab(pilot, tmp_path / "indexes")
        assert "built with another-model" in lab.text_of("#info")
        await build(pilot, lab)
        assert "another embedding model cannot add to it" in lab.text_of("#report")
        lab.query_one("#query", Input).value = QUESTION
        lab.query_one("#query", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: "not with" in lab.text_of("#hits-text"), timeout=30)
        assert "its vectors cannot be compared" in lab.text_of("#hits-text")

        lab.query_one("#dir", Input).value = str(empty)
        await build(pilot, lab)
        assert "nothing to index (an empty directory" in lab.text_of("#report")

        lab.query_one("#dir", Input).value = str(mixed)
        await build(pilot, lab)
        report = lab.text_of("#report")
        assert "built: 1 chunks from 1 files" in report and "skipped blob.bin: binary (it holds NUL bytes)" in report
        lab.query_one("#query", Input).value = "Who lit the lamp?"
        await pilot.press("enter")
        await until(pilot, lambda: lab.retrieved is not None, timeout=30)
        shown = lab.text_of("#hits-text")
        assert "␛[31mkeeper" in shown and "\x1b" not in shown  # the file's escape sequence is made visible
        assert not [n for n in notes(app) if "failed" in n]
