"""The RAG lab: index a directory of text files (chunks embedded with llama.cpp), ask the index, and make it
the dashboard chat's retrieval index.

Builds and queries run in thread workers that hand the embedding to the engine thread (through
:class:`~tui.app.rag_host.RagHost`); progress comes back as messages. A cancelled build keeps what it saved:
the next build resumes with the files already done.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, ProgressBar, Static

from ...engine.errors import EngineError
from ...engine.thread import engine_thread
from ...rag import IndexError_
from ...rag.chunk import MAX_CHUNK
from ...safe_text import visible
from ..rag_host import RagHost, describe, describe_index
from ..widgets.panels import escape
from ..widgets.safe import SafeInput
from .base import WideModal


def _weak(kind: str) -> str:
    """An embedding model's kind, in markup: the weak warning stands out."""
    return f"[$warning]{escape(kind)}[/]" if "weak" in kind else escape(kind)


class RagLab(WideModal[None]):
    """Build an index, query it, use it in chat."""

    MODE = "lab"  # tui.app.modes: esc closes it
    BINDINGS = [Binding("escape", "cancel_or_close", "Cancel / close", id="raglab.close"),
                Binding("ctrl+b", "build", "Build", id="raglab.build"),
                Binding("ctrl+t", "use", "Use in chat", id="raglab.use")]
    DEFAULT_CSS = """
    RagLab #form, RagLab #ask { height: 3; }
    RagLab #dir, RagLab #model { width: 2fr; }
    RagLab #size, RagLab #overlap { width: 17; }
    RagLab #k { width: 11; }
    RagLab #query { width: 1fr; }
    RagLab #buttons { height: 3; }
    RagLab #bar { height: 1; margin: 0 1; }
    RagLab #progress, RagLab #info, RagLab #report { height: auto; }
    RagLab #hits { height: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    """

    class Progress(Message):
        """A build's progress (posted from the engine thread)."""

        def __init__(self, done: int, total: int, chunks: int, file: str) -> None:
            super().__init__()
            self.done, self.total, self.chunks, self.file = done, total, chunks, file

    def __init__(self, host: RagHost, directory: Path) -> None:
        super().__init__()
        self.host = host
        self.directory = directory
        self.index_path = host.index_for(directory)
        self.info: dict[str, Any] | None = None  # describe_index of the index shown (None: not built yet)
        self.cancel = threading.Event()
        self.building = False
        self.builds_ended = 0  # builds that ended (built, cancelled or failed)
        self.report: Any = None  # the last BuildReport
        self.retrieved: Any = None  # the last query's Retrieved
        self._kinds: dict[str, tuple[str, str]] = {}  # embedding model path -> (name, kind), probed once

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]RAG lab[/b] — split the text files of a directory into chunks, embed them with llama.cpp and "
                "keep them in an index; then ask it: the chunks closest to a question (cosine similarity) are what "
                "a retrieval-augmented chat turn carries. "
                f"[b]Build[/b] ({self.host.key('raglab.build', 'ctrl+b')}) · Esc cancels a build (the next build "
                f"resumes) or closes · [b]Use in chat[/b] ({self.host.key('raglab.use', 'ctrl+t')}).", id="intro")
            with Horizontal(id="form"):
                yield SafeInput(str(self.directory), id="dir")
                yield SafeInput("800", id="size", type="integer")
                yield SafeInput("100", id="overlap", type="integer")
                yield SafeInput(self.host.embedding_model(), id="model")
            with Horizontal(id="buttons"):
                yield Button("Build", id="build", variant="primary")
                yield Button("Rebuild", id="rebuild")
                yield Button("Cancel", id="cancel")
                yield Button("Use in chat", id="use", variant="success")
            yield ProgressBar(total=1, show_eta=False, id="bar")
            yield Static("", id="progress")
            yield Static("", id="info")
            yield Static("", id="report")
            with Horizontal(id="ask"):
                yield SafeInput("", placeholder="a question — Enter retrieves the closest chunks", id="query")
                yield SafeInput(str(self.host.k), id="k", type="integer")
            with VerticalScroll(id="hits"):
                yield Static("", id="hits-text")

    def on_mount(self) -> None:
        for selector, title in (("#dir", "directory"), ("#size", "chunk chars"), ("#overlap", "overlap"),
                                ("#model", "embedding model (GGUF) for a build"), ("#query", "ask the index"),
                                ("#k", "top k"), ("#hits", "retrieved chunks")):
            self.query_one(selector).border_title = title
        self._describe(self.index_path, self.query_one("#model", Input).value, first=True)

    def on_unmount(self) -> None:
        self.cancel.set()  # a build still running stops at its next chunk; what it saved is kept

    # -- what the screen says ------------------------------------------------------------------------------

    def _update(self, selector: str, markup: str) -> None:
        if self.is_attached:  # a worker's answer may come after the screen closed
            self.query_one(selector, Static).update(markup)

    def text_of(self, selector: str) -> str:
        """A Static's text, without its markup (the tests read the report, the info line and the hits)."""
        return Content.from_markup(str(self.query_one(selector, Static).content)).plain

    def _show_info(self, info: dict[str, Any] | None, error: str = "", model: tuple[str, str] | None = None) -> None:
        where = escape(str(self.index_path))
        if error:
            self._update("#info", f"index {where}: [$error]{escape(error)}[/]")
        elif info is not None:
            c = info["chunking"]
            self._update("#info", f"index {where}: {info['chunks']:,} chunks from {info['files']:,} files (chunks of "
                                  f"{c.get('size')} chars, overlap {c.get('overlap')})\nbuilt with "
                                  f"[b]{escape(info['model'])}[/b]: {_weak(info['kind'])}")
        else:
            name, kind = model or (Path(self.query_one('#model', Input).value).stem, "…")
            self._update("#info", f"index {where}: not built yet\nBuild embeds with [b]{escape(name)}[/b]: "
                                  f"{_weak(kind)}")

    # -- the index of the directory shown ----------------------------------------------------------------------

    @on(Input.Changed, "#dir")
    def _dir_changed(self, event: Input.Changed) -> None:
        path = self.host.index_for(Path(event.value).expanduser())
        if path == self.index_path:  # the same index (the field's first value: on_mount describes it)
            return
        self.index_path = path
        if not self.building:
            self._describe(self.index_path, self.query_one("#model", Input).value)

    @work(thread=True, exclusive=True, group="rag-describe", exit_on_error=False)
    def _describe(self, path: Path, model: str, first: bool = False) -> None:
        """Open the index (no model needed); when there is none yet, load the build's embedding model once to
        say what kind of vectors it makes."""
        if (path / "manifest.json").exists():
            try:
                info = describe_index(path)
            except IndexError_ as exc:
                self.app.call_from_thread(self._described, path, None, str(exc), None, first)
                return
            self.app.call_from_thread(self._described, path, info, "", None, first)
            return
        self.app.call_from_thread(self._described, path, None, "", None, first)
        named = self._kinds.get(model)
        if named is None:
            try:
                named = engine_thread().call(_model_kind, model) if model else ("no embedding model", "give a path")
            except EngineError as exc:
                named = (Path(model).stem, f"cannot load it: {exc}")
            self._kinds[model] = named
        self.app.call_from_thread(self._described, path, None, "", named, first)

    def _described(self, path: Path, info: dict[str, Any] | None, error: str, model: tuple[str, str] | None,
                   first: bool) -> None:
        if path != self.index_path or not self.is_attached:
            return  # the directory changed meanwhile
        self.info = info
        if info is not None and first:  # the index's own chunking: Build adds to it as it is
            self.query_one("#size", Input).value = str(info["chunking"].get("size", 800))
            self.query_one("#overlap", Input).value = str(info["chunking"].get("overlap", 100))
        self._show_info(info, error, model)

    # -- building --------------------------------------------------------------------------------------------

    def _number(self, selector: str, what: str, low: int, high: int) -> int | None:
        text = self.query_one(selector, Input).value.strip()
        if not text.isdigit() or not low <= int(text) <= high:
            self._update("#report", f"[$error]{what} must be a whole number from {low} to {high:,}[/]")
            return None
        return int(text)

    def action_build(self, rebuild: bool = False) -> None:
        if self.building:
            self._update("#report", "a build is running: Esc (or Cancel) stops it")
            return
        size = self._number("#size", "the chunk size", 1, MAX_CHUNK)
        overlap = self._number("#overlap", "the overlap", 0, MAX_CHUNK - 1)
        if size is None or overlap is None:
            return
        directory = Path(self.query_one("#dir", Input).value).expanduser()
        self.index_path = out = self.host.index_for(directory)
        self.cancel = threading.Event()
        self.building = True
        self.query_one("#bar", ProgressBar).update(total=None, progress=0)
        self._update("#progress", "loading the embedding model…")
        self._update("#report", "rebuilding from scratch…" if rebuild else "building…")
        self._build(directory, out, self.query_one("#model", Input).value.strip(), size, overlap, rebuild, self.cancel)

    @on(Button.Pressed, "#build")
    def _build_pressed(self) -> None:
        self.action_build()

    @on(Button.Pressed, "#rebuild")
    def _rebuild_pressed(self) -> None:
        self.action_build(rebuild=True)

    @on(Input.Submitted, "#dir,#size,#overlap,#model")
    def _form_submitted(self) -> None:
        self.action_build()

    @work(thread=True, exclusive=True, group="rag-build", exit_on_error=False)
    def _build(self, directory: Path, out: Path, model: str, size: int, overlap: int, rebuild: bool,
               cancel: threading.Event) -> None:
        def progress(done: int, total: int, chunks: int, name: str) -> None:  # on the engine thread
            self.post_message(self.Progress(done, total, chunks, name))

        try:
            report = self.app.run_guarded(lambda: self.host.build(
                directory, out, model, size=size, overlap=overlap, rebuild=rebuild, cancel=cancel,
                on_progress=progress))
            info = describe(report.saved)  # the index the build wrote: no need to read it back
        except (IndexError_, EngineError) as exc:
            self.app.call_from_thread(self._build_failed, str(exc))
            return
        self.app.call_from_thread(self._built, out, report, info)

    @on(Progress)
    def _progress(self, event: Progress) -> None:
        if not self.building:
            return
        self.query_one("#bar", ProgressBar).update(total=max(1, event.total), progress=event.done)
        where = f" · {escape(visible(event.file))}" if event.file else ""
        self._update("#progress", f"{event.done:,}/{event.total:,} files · {event.chunks:,} chunks{where}")

    def _build_failed(self, error: str) -> None:
        self.building = False
        self.builds_ended += 1
        self._update("#progress", "")
        self._update("#report", f"[$error]{escape(error)}[/]")

    def _built(self, out: Path, report: Any, info: dict[str, Any]) -> None:
        if not self.is_attached:
            return
        self.building, self.report = False, report
        self.builds_ended += 1
        self.index_path, self.info = out, info
        if out == self.host.index_path:  # the index chat retrieves from: the chunks panel counts its new chunks
            self.host.index_info = info
        bar = self.query_one("#bar", ProgressBar)
        bar.update(total=max(1, bar.total or 1), progress=bar.total or 1)
        self._update("#progress", "")
        self._show_info(info)
        files = report.files + report.kept
        if report.cancelled:
            head = (f"[$warning]cancelled[/]: {report.chunks:,} chunks of {files:,} files are saved — "
                    "Build again resumes where it stopped (the files done are kept)")
        else:
            head = f"[b]built[/b]: {report.chunks:,} chunks from {files:,} files"
        lines = [head, f"{report.files:,} files embedded now: {report.new_chunks:,} chunks in {report.seconds:.1f} s "
                       f"({report.chunks_per_s:.1f} chunks/s)"
                       + (f"; {report.kept:,} files kept from before (resumed)" if report.kept else "")]
        lines += [f"skipped {escape(visible(name))}: {escape(why)}" for name, why in report.skipped]
        self._update("#report", "\n".join(lines))

    def action_cancel_or_close(self) -> None:
        if self.building:
            self._cancel()
            return
        self.dismiss()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        if not self.building:
            self._update("#report", "no build is running")
            return
        self.cancel.set()
        self._update("#progress", "cancelling… (what is embedded is saved: the next build resumes)")

    # -- asking --------------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#query")
    def _query(self, event: Input.Submitted) -> None:
        self.ask(event.value)

    def _ready_k(self, selector: str, verb: str) -> int | None:
        """The top k to ask or use the index with, or None (and why, in ``selector``) when there is no index to
        ``verb`` yet."""
        if self.building:
            self._update(selector, f"the index is being built: {verb} when it is done")
            return None
        if self.info is None:
            self._update(selector, "no index yet: Build it first")
            return None
        return self._number("#k", "top k", 1, 50)

    def ask(self, question: str) -> None:
        if not question.strip():
            return
        k = self._ready_k("#hits-text", "ask")
        if k is None:
            return
        self._update("#hits-text", "retrieving…")
        self._ask(self.index_path, question, k)

    @work(thread=True, exclusive=True, group="rag-query", exit_on_error=False)
    def _ask(self, path: Path, question: str, k: int) -> None:
        app = self.app
        if app.running and not app.serving_request:
            app.controller.stop()  # the engine thread embeds the question once the run has stopped
        try:
            retrieved = engine_thread().call(self.host.retrieve, path, question, k)
        except (IndexError_, EngineError) as exc:
            app.call_from_thread(self._update, "#hits-text", f"[$error]{escape(str(exc))}[/]")
            return
        app.call_from_thread(self._show_hits, retrieved)

    def _show_hits(self, retrieved: Any) -> None:
        if not self.is_attached:
            return
        self.retrieved = retrieved
        lines = [f"{len(retrieved.hits)} chunks in {retrieved.ms:,.0f} ms (embedding the question and a search "
                 "by cosine similarity)"]
        for hit in retrieved.hits:
            c = hit.chunk
            lines.append(f"\n[b]\\[{hit.rank + 1}] {hit.score:.3f}[/b]  [$accent]{escape(c.source)}[/] "
                         f"@ {c.start:,}–{c.end:,}")
            lines.append(escape(" ".join(c.text.split())))
        self._update("#hits-text", "\n".join(lines))

    # -- using it in chat ----------------------------------------------------------------------------------------

    @on(Button.Pressed, "#use")
    def action_use(self) -> None:
        k = self._ready_k("#report", "use it")
        if k is None:
            return
        self.host.k = k
        if self.host.use(self.index_path, self.info):
            self.dismiss()


def _model_kind(path: str) -> tuple[str, str]:
    """On the engine thread: an embedding model's name and kind (loading one takes ~0.1 s)."""
    from ...engine.embed import Embedder

    with Embedder(path) as embedder:
        return visible(embedder.name), visible(embedder.kind)
