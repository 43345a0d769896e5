"""``llmtui index DIR``: text files split into chunks, embedded with llama.cpp, kept in a local index; ``--query``
retrieves the chunks closest to a question (:mod:`tui.rag`)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import validate as V
from ..rag.chunk import MAX_CHUNK
from ..safe_text import json_text, visible
from .common import CliError, common_args, load_config_or_fail, pick_model, say


def register(sub: Any) -> None:
    ix = sub.add_parser(
        "index", help="index a directory of text files for retrieval (embeddings), or query an index",
        description="Split the UTF-8 text files under DIR into chunks (--chunk-size characters, --overlap between "
        "neighbours), embed them with llama.cpp (the embedding model is --model; the embedded chat model's "
        "mean-pooled states are weak embeddings, and the output says so) and keep them in a local index (numpy "
        "vectors + a JSON manifest) under the data directory. Ctrl-C stops; running it again resumes. --query "
        "prints the chunks closest to a question, by cosine similarity.")
    ix.add_argument("directory", type=Path, metavar="DIR")
    ix.add_argument("--out", type=Path, metavar="PATH", help="where the index goes (default: the data directory)")
    ix.add_argument("--chunk-size", type=V.int_in(1, MAX_CHUNK), default=800, metavar="N",
                    help="characters per chunk (default 800)")
    ix.add_argument("--overlap", type=V.int_in(0, MAX_CHUNK - 1), default=100, metavar="N",
                    help="characters shared by neighbouring chunks (default 100)")
    ix.add_argument("--pooling", choices=("mean", "cls", "last"), help="pooling (default: the model's own; mean)")
    ix.add_argument("--rebuild", action="store_true", help="start the index afresh (another model or chunking)")
    ix.add_argument("--query", type=V.utf8_text, metavar="TEXT", help="retrieve the chunks closest to TEXT")
    ix.add_argument("-k", type=V.int_in(1, 100), default=3, help="chunks --query prints (default 3)")
    ix.add_argument("--json", action="store_true")
    common_args(ix, sub=True)


def cmd_index(args: argparse.Namespace) -> int:
    from ..engine.embed import Embedder
    from ..engine.errors import EngineError
    from ..rag import IndexError_, build_index, open_index
    from ..rag.index import default_index_dir
    from .generate import ctrl_c_stops

    out = args.out or default_index_dir(args.directory)
    entry = pick_model(args, load_config_or_fail(args))
    try:
        index = open_index(out) if args.query is not None else None  # a bad index is told before a model loads
        with Embedder(entry.path, pooling=args.pooling) as embedder:
            if index is not None:
                index.check_model(embedder)
                hits = index.search(embedder.embed(args.query).vector, args.k)
                return _print_hits(args, index, hits, embedder.kind)
            cancel = threading.Event()

            def progress(done: int, total: int, chunks: int, name: str) -> None:
                if not args.json and sys.stderr.isatty():
                    bar = "█" * (20 * done // max(1, total))
                    sys.stderr.write(f"\r[{bar:<20}] {done}/{total} files, {chunks} chunks {visible(name)[:40]:<40}")
                    sys.stderr.flush()

            with ctrl_c_stops(SimpleNamespace(stop=cancel.set)):
                report = build_index(args.directory, embedder, out, size=args.chunk_size, overlap=args.overlap,
                                     rebuild=args.rebuild, cancel=cancel, on_progress=progress)
            kind = embedder.kind
    except (IndexError_, EngineError) as exc:
        raise CliError(str(exc)) from None
    if not args.json and sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json_text({"index": report.index, "files": report.files, "kept": report.kept, "chunks": report.chunks,
                         "new_chunks": report.new_chunks, "chunks_per_s": round(report.chunks_per_s, 2),
                         "skipped": [{"file": f, "why": w} for f, w in report.skipped],
                         "cancelled": report.cancelled, "model": entry.name, "kind": kind}, ensure_ascii=False))
        return 0
    say(f"{report.index}: {report.chunks} chunks from {report.files + report.kept} files ({report.new_chunks} new, "
        f"{report.chunks_per_s:.1f} chunks/s; {report.kept} files kept from before) — {entry.name}: {kind}")
    for name, why in report.skipped:
        say(f"  skipped {visible(name)}: {why}")
    if report.cancelled:
        say("stopped: run the same command again to resume")
    return 0


def _print_hits(args: argparse.Namespace, index: Any, hits: list[Any], kind: str) -> int:
    if args.json:
        print(json_text({"index": str(index.path), "query": args.query, "hits": [h.as_dict() for h in hits]},
                        ensure_ascii=False))
        return 0
    say(f"{len(index.chunks)} chunks, {index.model['name']}: {kind}")
    for h in hits:
        say(f"[{h.rank + 1}] {h.score:.3f}  {visible(h.chunk.source)} @ {h.chunk.start}")
        say("    " + visible(" ".join(h.chunk.text.split())[:300]))
    return 0


COMMANDS = {"index": cmd_index}
