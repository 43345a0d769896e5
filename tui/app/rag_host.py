"""The app's side of retrieval (issue 22): the index the dashboard's chat retrieves from, the
:class:`~tui.rag.Retriever` that searches it (loaded once, on the engine thread, and closed when another
replaces it or the app exits), the RAG lab's jobs, and what the retrieved context costs a turn. Retrieval
itself is :mod:`tui.rag`'s (no Textual there).

Everything that embeds runs on the engine thread (``engine_thread().call``, from a thread worker): the
retriever's embedding model is a llama.cpp context like the chat model's. Only that thread touches
``_retriever``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.worker import get_current_worker

from ..engine.errors import EngineError
from ..engine.thread import engine_thread
from ..rag import Index, IndexError_, Retriever, build_index, open_index
from ..rag.index import default_index_dir
from ..safe_text import visible
from ..units import human_bytes
from .modes import screen_kind


@dataclass(frozen=True, slots=True)
class RetrievalCost:
    """What a turn's retrieved text costs: its tokens (in the chat model), their KV bytes, and its share of
    the prompt's evaluation time (prompt ms × retrieved tokens / prompt tokens evaluated)."""

    tokens: int
    kv_bytes: float  # tokens × the engine's bytes per token
    prompt_ms: float | None  # None until the prompt has been evaluated
    share: float | None  # of the prompt's evaluated tokens

    @property
    def time_text(self) -> str:
        return "" if self.prompt_ms is None else f"~{self.prompt_ms:,.0f} ms of the prompt ({self.share:.0%})"

    def lines(self) -> tuple[str, ...]:
        """The KV gauge's lines (it is narrow)."""
        head = f"retrieved {self.tokens:,} tok = {human_bytes(self.kv_bytes)}"
        return (head, self.time_text) if self.time_text else (head,)

    def text(self) -> str:
        """The status line's words."""
        head = f"retrieved {self.tokens:,} tok = {human_bytes(self.kv_bytes)} KV"
        return f"{head}, {self.time_text}" if self.time_text else head


def retrieval_cost(tokens: int, bytes_per_token: float, prompt_ms: float, n_prompt: int) -> RetrievalCost:
    share = min(1.0, tokens / n_prompt) if n_prompt > 0 else None
    return RetrievalCost(tokens, tokens * bytes_per_token, prompt_ms * share if share is not None else None, share)


def retrieved_span(prompt: str, retrieved: Any) -> tuple[int, int] | None:
    """Where the retrieved chunks sit in ``prompt`` (the conversation as the chat template rendered it: the
    augmented turn is its last user turn), or None when the template changed the text."""
    if retrieved is None:
        return None
    start, end = retrieved.context_span
    at = prompt.rfind(retrieved.message)
    if at >= 0:
        return at + start, at + end
    blocks = retrieved.message[start:end]
    at = prompt.rfind(blocks) if blocks else -1
    return (at, at + len(blocks)) if at >= 0 else None


def describe_index(path: Path) -> dict[str, Any]:
    """What the lab and the chunks panel say about the index at ``path`` (it raises :class:`IndexError_`)."""
    return describe(open_index(path))


def describe(index: Index) -> dict[str, Any]:
    """What the lab and the chunks panel say about an open index."""
    model = index.model
    done = sum(1 for f in index.manifest["files"].values() if isinstance(f, dict) and f.get("status") == "done")
    return {"path": str(index.path), "chunks": len(index.chunks), "files": done,
            "model": visible(model.get("name", "?")),
            "kind": visible(model.get("kind", "?")), "dimensions": model.get("dimensions"),
            "chunking": dict(index.manifest["chunking"]), "source": visible(index.manifest.get("source", ""))}


class RagHost:
    """Retrieval for the app: the lab's builds and queries, the index in use, the retrieval before a chat turn."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.index_path: Path | None = None  # the dashboard's retrieval index (None: none chosen yet)
        self.index_info: dict[str, Any] = {}  # describe_index of it
        self.on = False  # retrieval before each chat turn
        self.k = 3
        self.index_root: Path | None = None  # where the lab's indexes go (None: the data directory's indexes/)
        self.last: tuple[Any, int | None] | None = None  # the last Retrieved and its tokens in the chat model
        self._retriever: Retriever | None = None  # the engine thread's

    # -- what the app shows ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return visible(self.index_path.name) if self.index_path is not None else ""

    @property
    def enabled(self) -> bool:
        """Retrieval is on and an index is in use (it happens before chat turns)."""
        return self.on and self.index_path is not None

    @property
    def active(self) -> bool:
        """Retrieval happens before the next turn: an index in use, retrieval on, chat mode on."""
        return self.enabled and bool(self.app.chat_mode)

    def index_for(self, directory: Path) -> Path:
        return default_index_dir(directory, self.index_root)

    def embedding_model(self) -> str:
        """The model a lab build embeds with by default: the loaded local model file, else the embedded
        SmolLM2 (a chat model either way: its vectors are weak, and the lab says so)."""
        from ..engine.models import embedded_model_path

        path = self.app.model_file() or embedded_model_path()
        return str(path) if path is not None else ""

    def cost_for(self, board: Any, bytes_per_token: float | None = None) -> RetrievalCost | None:
        """What the chunks of the run ``board`` (a dashboard) shows cost, when it is the live dashboard's
        retrieval-augmented turn that this host retrieved and counted (None otherwise)."""
        run, last = board.model, self.last
        if run.retrieved is None or last is None or last[0] is not run.retrieved or last[1] is None:
            return None
        if screen_kind(board) != "live" or board.engine is None:
            return None
        if bytes_per_token is None:
            bytes_per_token = board.engine.kv_layout().bytes_per_token
        return retrieval_cost(last[1], bytes_per_token, run.prompt_ms, run.n_prompt)

    def show_panel(self, board: Any, note: str = "") -> None:
        """While retrieval is on, the chunks panel takes the sampler chain's place on the live dashboard
        ``board``: the chunks of the run it shows, or ``note`` (retrieving…, a failure)."""
        from .widgets.panels import ChainTrace, RetrievedChunks

        chunks, trace = board.panel(RetrievedChunks), board.panel(ChainTrace)
        if chunks is None or trace is None or screen_kind(board) != "live":
            return
        on = self.enabled
        chunks.display, trace.display = on, not on
        if on:
            title, model, hits = self.panel_view(board.model.retrieved)
            chunks.show(note or title, model, () if note else hits)

    def panel_view(self, retrieved: Any) -> tuple[str, str, tuple[Any, ...]]:
        """(title, model line, hits) for the chunks panel."""
        info = self.index_info
        kind = str(info.get("kind", "?"))
        model = f"{info.get('model', '?')}: " + ("weak embeddings (a chat model's pooled states)" if "weak" in kind
                                                  else kind)
        if retrieved is None:
            return f"retrieval on: {self.name} (k={self.k}): ask a question", model, ()
        return (f"top {len(retrieved.hits)} of {info.get('chunks', '?')} chunks · {retrieved.ms:,.0f} ms · "
                f"{self.name}", model, tuple(retrieved.hits))

    # -- the retriever (engine thread only) -----------------------------------------------------------------

    def retrieve(self, path: Path, question: str, k: int) -> Any:
        """On the engine thread: the top-``k`` chunks of ``path``'s index for ``question`` (its model loaded once)."""
        if self._retriever is None or self._retriever.index.path != path:
            self._drop()
            self._retriever = Retriever(path, k=k)
        return self._retriever.retrieve(question, k)

    def _drop(self, path: Path | None = None) -> None:
        """On the engine thread: close the retriever (only if it searches ``path``, when given)."""
        if self._retriever is not None and (path is None or path == self._retriever.index.path):
            old, self._retriever = self._retriever, None
            old.close()

    def close(self) -> None:
        """The app exits: the retriever's model is freed on the engine thread, after whatever it runs."""
        engine_thread().submit(self._drop)

    def build(self, directory: Path, out: Path, model: str, *, size: int, overlap: int, rebuild: bool,
              cancel: threading.Event, on_progress: Callable[[int, int, int, str], None]) -> Any:
        """On the engine thread: index ``directory`` into ``out`` (the BuildReport); the index's old retriever
        is closed first (its vectors change)."""
        from ..engine.embed import Embedder

        if not model:
            raise IndexError_("no embedding model: give the path of a GGUF file")
        self._drop(out)
        with Embedder(model) as embedder:
            return build_index(directory, embedder, out, size=size, overlap=overlap, rebuild=rebuild, cancel=cancel,
                               on_progress=on_progress)

    # -- the lab, and retrieval on or off --------------------------------------------------------------------

    def lab_directory(self) -> Path:
        """The directory the lab opens on: the one the index in use was built from, else the sample documents."""
        from ..rag import SAMPLE_DOCS

        return Path(self.index_info.get("source") or SAMPLE_DOCS) if self.index_path else SAMPLE_DOCS

    def use(self, path: Path, info: dict[str, Any]) -> bool:
        """``path``'s index becomes the chat's retrieval index, and chat mode goes on; False when this model
        cannot chat."""
        app = self.app
        if app.controller is None or not app.can_chat:
            app.notify("retrieval goes into a chat turn: this needs a model with a chat template (m picks one)",
                       severity="warning", timeout=8)
            return False
        if path != self.index_path:
            engine_thread().submit(self._drop)  # another index: its model is loaded at the first question
        self.index_path, self.index_info, self.on = path, info, True
        if not app.chat_mode:
            app.set_chat(True)
        self.shown()
        board = app.dashboard
        board.set_focus(board.query_one("#prompt"))  # the next thing to do is to ask (a lab over it closes onto it)
        app.notify(f"retrieval on: each question gets the top {self.k} chunks of {self.name} "
                   f"({info.get('model', '?')}); {self.key('rag.toggle', 'U')} turns it off", timeout=6)
        return True

    def toggle(self) -> None:
        app = self.app
        if self.index_path is None:
            app.notify(f"no index in use: {self.key('rag.open', 'R')} opens the RAG lab (build one, then "
                       "Use in chat)", severity="warning", timeout=6)
            return
        if not self.on:
            self.use(self.index_path, self.index_info)
            return
        self.on = False
        self.shown()
        app.notify("retrieval off: questions go to the model as they are", timeout=4)

    def shown(self) -> None:
        self.show_panel(self.app.dashboard)
        self.app._repaint_status()

    def key(self, bid: str, default: str) -> str:
        """The key a binding has in this session (a remap, or a browser's own key first)."""
        from .modes import key_label

        return key_label(self.app.keymap.get(bid, default))

    def status_text(self) -> str:
        """``RAG sample (k=3; U: off, R: lab)`` while retrieval is on."""
        if not self.enabled:
            return ""
        if not self.app.chat_mode:
            return f"RAG {self.name}: in chat mode only ({self.key('chat.toggle', 'c')}: chat)"
        return f"RAG {self.name} (k={self.k}; {self.key('rag.toggle', 'U')}: off, {self.key('rag.open', 'R')}: lab)"

    # -- a retrieval-augmented turn -----------------------------------------------------------------------------

    def ask(self, question: str) -> None:
        """Retrieve for ``question`` (engine thread), then start the chat turn that carries the chunks."""
        app = self.app
        if app.refuse_start(question):  # it says why nothing starts; a run going now is stopped
            return
        self.show_panel(app.dashboard, f"retrieving the top {self.k} chunks of {self.name}…")
        path, engine, k = self.index_path, app.engine, self.k
        app.run_worker(lambda: self._retrieve_then_run(path, question, engine, k), thread=True, group="rag",
                       exclusive=True, exit_on_error=False)

    def _retrieve_then_run(self, path: Path, question: str, engine: Any, k: int) -> None:
        worker = get_current_worker()
        try:
            retrieved = engine_thread().call(self.retrieve, path, question, k)
        except (IndexError_, EngineError) as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        start, end = retrieved.context_span
        try:  # what the retrieved text costs in the chat model's tokens (a server may not tokenize)
            tokens: int | None = engine_thread().call(lambda: len(engine.tokenize(retrieved.message[start:end],
                                                                                  add_bos=False)))
        except EngineError:
            tokens = None
        if not worker.is_cancelled:
            self.app.call_from_thread(self._run, retrieved, tokens)

    def _run(self, retrieved: Any, tokens: int | None) -> None:
        self.last = (retrieved, tokens)
        self.app.start_generation(retrieved.message, retrieved=retrieved)

    def _failed(self, error: str) -> None:
        self.app.notify(f"retrieval failed: {error}", severity="error", timeout=10)
        self.show_panel(self.app.dashboard, f"retrieval failed: {error}")
