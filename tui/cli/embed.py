"""``llmtui embed``: vectors, dimensions, pooling and the cosine similarities of texts, through llama.cpp's
embedding API (:mod:`tui.engine.embed`)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import validate as V
from ..safe_text import json_text, visible
from .common import CliError, common_args, load_config_or_fail, pick_model, say, warn

MAX_TEXTS = 64


def register(sub: Any) -> None:
    emb = sub.add_parser(
        "embed", help="embeddings of texts and their cosine similarities (llama.cpp's embedding API)",
        description="Embed each TEXT with llama.cpp (an embedding context: its pooling type, the pooled vector of "
        "each text) and print the dimensions, the pooling, what kind of model made them, and the matrix of cosine "
        "similarities. A sentence encoder GGUF (e.g. all-MiniLM-L6-v2 converted with llama.cpp's "
        "convert_hf_to_gguf.py) gives real sentence embeddings; the default chat model's mean-pooled hidden "
        "states are weak ones, and the output says so.")
    emb.add_argument("texts", nargs="+", type=V.utf8_text, metavar="TEXT")
    emb.add_argument("--pooling", choices=("mean", "cls", "last"),
                     help="pooling of the token vectors (default: the model's own; mean for a chat model)")
    emb.add_argument("--json", action="store_true", help="vectors, norms and the similarity matrix as JSON")
    emb.add_argument("--dims", type=V.int_in(0, 65536), default=8, metavar="N",
                     help="vector components printed per text (default 8; --json prints them all)")
    common_args(emb, sub=True)


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engine.embed import Embedder, cosine_matrix
    from ..engine.errors import EngineError

    if len(args.texts) > MAX_TEXTS:
        raise CliError(f"at most {MAX_TEXTS} texts at once (got {len(args.texts)}): `llmtui index` is for more")
    config = load_config_or_fail(args)
    entry = pick_model(args, config)
    try:
        with Embedder(entry.path, pooling=args.pooling) as embedder:
            done = [embedder.embed(text) for text in args.texts]
            kind, pooling, dims, name = embedder.kind, embedder.pooling, embedder.n_embd, entry.name
    except EngineError as exc:
        raise CliError(str(exc)) from None
    sims = cosine_matrix(np.stack([e.vector for e in done]))
    if args.json:
        print(json_text({"model": name, "kind": kind, "pooling": pooling, "dimensions": dims,
                         "texts": [{"text": e.text, "tokens": e.n_tokens, "truncated": e.truncated, "norm": e.norm,
                                    "vector": [float(x) for x in e.vector]} for e in done],
                         "cosine": [[round(float(x), 6) for x in row] for row in sims]}, ensure_ascii=False))
        return 0
    say(f"{name}: {dims} dimensions, {pooling} pooling — {kind}")
    for i, e in enumerate(done):
        head = " ".join(f"{x:+.3f}" for x in e.vector[:args.dims])
        say(f"[{i}] {visible(_short(e.text))} ({e.n_tokens} tokens, |v| {e.norm:.2f})  {head}"
            + (" …" if args.dims and args.dims < dims else ""))
        if e.truncated:
            warn(f"text {i} is longer than the context: only its first {e.n_tokens} tokens were embedded")
    if len(done) > 1:
        say("cosine similarity:")
        say("      " + "".join(f"{f'[{j}]':>8}" for j in range(len(done))))
        for i, row in enumerate(sims):
            say(f"  [{i}] " + "".join(f"{x:8.3f}" for x in row))
    return 0


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


COMMANDS = {"embed": cmd_embed}
