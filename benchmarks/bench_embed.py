"""Embeddings: recall on the labelled retrieval set for each embedding model available, embedding speed, and the
latency of a top-k search over 10,000 chunk vectors.

For every model found (the embedded SmolLM2; Gemma 3 with the ``gemma`` extra; any sentence encoder GGUF given
with --model, e.g. all-MiniLM-L6-v2 converted with llama.cpp's convert_hf_to_gguf.py) and pooling: recall@1 and
recall@3 of the 30 questions of tests/fixtures/rag/questions.json against the 10 sample documents (tui/rag/sample),
and texts per second (the 40 texts of the set, batched as the index builds them). Then 10,000 vectors (the set's own
document vectors, each with small noise, so the search works on real embedding geometry) searched by cosine for the
top 3: median and p99 latency per question, of the product's own search (``Index.search``: numpy).

    python benchmarks/bench_embed.py [--model PATH ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from tui.engine.embed import Embedder
from tui.engine.models import embedded_model_path
from tui.rag import SAMPLE_DOCS, Chunk, Index

RAG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "rag"


def models(extra: list[str]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [(str(embedded_model_path()), "mean"), (str(embedded_model_path()), "last")]
    from tui.config import app_dirs
    from tui.engine.models import gemma_model_path

    gemma = gemma_model_path(app_dirs().models)  # the gemma extra, when installed
    if gemma is not None:
        out.append((str(gemma), "mean"))
    return out + [(p, None) for p in extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="PATH", help="another GGUF to measure")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20:
        ap.error("--rounds 1..20")
    docs = sorted(SAMPLE_DOCS.glob("*.txt"))
    names = [d.name for d in docs]
    doc_texts = [d.read_text(encoding="utf-8") for d in docs]
    questions = json.loads((RAG / "questions.json").read_text(encoding="utf-8"))
    q_texts = [q["q"] for q in questions]
    truth = np.array([names.index(q["doc"]) for q in questions])
    doc_vectors = None
    for path, pooling in models(args.model):
        with Embedder(path, pooling=pooling) as e:
            rates = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                docs_done = e.embed_texts(doc_texts)  # embed_many's work, with each text's tokens counted
                dv = np.stack([x.vector for x in docs_done])
                qv = e.embed_many(q_texts)
                rates.append((len(doc_texts) + len(q_texts)) / (time.perf_counter() - t0))
            order = np.argsort(-(qv @ dv.T), axis=1)
            r1 = float(np.mean(order[:, 0] == truth))
            r3 = float(np.mean([t in row[:3] for t, row in zip(truth, order)]))
            n_tokens = sum(x.n_tokens for x in docs_done)
            print(f"{e.name} ({e.pooling} pooling, {e.n_embd} dims): recall@1 {r1:.2f}  recall@3 {r3:.2f}  "
                  f"{statistics.median(rates):6.1f} texts/s ({n_tokens / len(doc_texts):.0f} tokens per document)"
                  f"  — {e.kind}")
            if doc_vectors is None:
                doc_vectors, query_vectors = dv, qv
    assert doc_vectors is not None
    import tempfile

    from tui.rag import build_index

    with Embedder(str(embedded_model_path())) as e, tempfile.TemporaryDirectory() as tmp:
        report = build_index(SAMPLE_DOCS, e, Path(tmp) / "ix", size=300, overlap=50)
        size = sum(f.stat().st_size for f in (Path(tmp) / "ix").iterdir())
        print(f"llmtui index of the sample documents (300-character chunks, 50 shared): {report.chunks} chunks in "
              f"{report.seconds:.2f} s = {report.chunks_per_s:.1f} chunks/s; {size / 1024:.0f} KiB on disk, "
              f"{size / max(1, report.chunks) / 1024:.2f} KiB per chunk ({e.n_embd * 4 / 1024:.2f} KiB of it the "
              "vector)")
    rng = np.random.default_rng(0)
    n = 10_000
    base = doc_vectors[rng.integers(0, len(doc_vectors), n)]
    vectors = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(f"doc{i}.txt", 0, 0, "") for i in range(n)]  # search reads only the vectors and the chunk list
    index = Index(Path("bench"), {}, chunks, vectors)
    times = []
    for q in np.tile(query_vectors, (4, 1)):
        t0 = time.perf_counter()
        index.search(q, 3)
        times.append(time.perf_counter() - t0)
    print(f"top-3 search over {n:,} vectors of {vectors.shape[1]} dims (Index.search, one question at a time): "
          f"median {statistics.median(times) * 1000:.2f} ms, p99 {np.percentile(times, 99) * 1000:.2f} ms; "
          f"the vectors take {vectors.nbytes / 2**20:.1f} MiB as float32")


if __name__ == "__main__":
    main()
