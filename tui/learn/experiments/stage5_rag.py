"""Stage 5 — retrieval: what an embedding is (sentence pairs compared by the cosine of the model's own pooled
vectors), and what retrieval changes (the shipped sample documents indexed, one question asked with and without
the chunks it retrieves: the answer's next-token distribution side by side)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np

from ...safe_text import visible
from ...units import shorten
from ..host import Finding, LearnError, Runner
from ..runs import next_token_distribution

# -- what is an embedding? ------------------------------------------------------------------------------------

SAME, TOPIC, UNRELATED = "same meaning", "same topic", "unrelated"
PAIRS = (
    (SAME, "The cat is sleeping on the sofa.", "A cat naps on the couch."),
    (SAME, "How do I reset my password?", "What are the steps to change my login password?"),
    (SAME, "The train was delayed by an hour.", "The train arrived sixty minutes late."),
    (TOPIC, "The cat is sleeping on the sofa.", "Dogs love to chase balls in the park."),
    (TOPIC, "Bread needs yeast to rise.", "Sourdough starter is flour and water left to ferment."),
    (TOPIC, "The volcano erupted last night.", "Lava flowed down the mountain toward the sea."),
    (UNRELATED, "The cat is sleeping on the sofa.", "Interest rates rose by half a percent."),
    (UNRELATED, "How do I reset my password?", "Octopuses have three hearts."),
    (UNRELATED, "The train was delayed by an hour.", "Bees make honey from nectar."),
)


def pair_cosines(path: str, pooling: str | None) -> dict[str, Any]:
    """Every pair's cosine similarity under the model at ``path`` (its own pooling, or ``pooling``): each sentence
    embedded once, the vectors L2-normalised, so the cosine is their dot product. Run it on the engine thread."""
    from ...engine.embed import Embedder

    texts = list(dict.fromkeys(s for _kind, a, b in PAIRS for s in (a, b)))
    with Embedder(path, pooling=pooling) as emb:
        vectors = emb.embed_many(texts)
        row = {t: i for i, t in enumerate(texts)}
        cosines = [float(np.clip(vectors[row[a]] @ vectors[row[b]], -1.0, 1.0)) for _kind, a, b in PAIRS]
        return {"cosines": cosines, "dimensions": emb.n_embd, "pooling": emb.pooling, "kind": emb.kind,
                "sentence_encoder": emb.sentence_encoder}


def separation(cosines: list[float]) -> dict[str, Any]:
    """How well the cosines tell related pairs from unrelated ones: the means per kind of pair, the gap between
    the related and the unrelated means, and the margin (the worst related pair minus the best unrelated one:
    above 0, every related pair scored higher than every unrelated one)."""
    kinds = [kind for kind, _a, _b in PAIRS]
    by = {k: [c for c, kk in zip(cosines, kinds) if kk == k] for k in (SAME, TOPIC, UNRELATED)}
    related = by[SAME] + by[TOPIC]
    best_unrelated = max(by[UNRELATED])
    return {"means": {k: mean(v) for k, v in by.items()}, "gap": mean(related) - mean(by[UNRELATED]),
            "margin": min(related) - best_unrelated, "below": sum(c <= best_unrelated for c in related),
            "n_related": len(related), "best_unrelated": best_unrelated,
            "unrelated_range": (min(by[UNRELATED]), best_unrelated),
            "best_unrelated_row": cosines.index(best_unrelated)}


def _verdict(s: dict[str, Any]) -> str:
    if s["gap"] <= 0:
        return f"related pairs did NOT score above unrelated ones (the means differ by {s['gap']:+.3f})"
    worst, best = s["best_unrelated"] + s["margin"], s["best_unrelated"]
    told = (f"every related pair above every unrelated one (lowest related {worst:.3f}, highest unrelated "
            f"{best:.3f})" if s["margin"] > 0 else f"but {s['below']} of {s['n_related']} related pairs scored no "
            f"higher than the best unrelated one ({best:.3f})")
    m = s["means"]
    return (f"related pairs scored above unrelated ones by {s['gap']:.3f} on average (same meaning {m[SAME]:.3f}, "
            f"same topic {m[TOPIC]:.3f}, unrelated {m[UNRELATED]:.3f}), {told}")


async def exp_embeddings(r: Runner, v: int) -> Finding:
    """Sentence pairs that mean the same, share a topic, or are unrelated, embedded with the loaded model's own
    file (an embeddings context of its own; variation 1: last-token pooling too) and compared by cosine."""
    host = r.host
    await host.ready()
    path = host.model_file()
    poolings = (None, "last") if v == 1 else (None,)
    runs = await host.in_thread(lambda: [pair_cosines(path, p) for p in poolings])
    seps = [separation(run["cosines"]) for run in runs]
    first, s = runs[0], seps[0]
    low, high = s["unrelated_range"]
    columns = ["pair", "sentence A", "sentence B"] + [f"cosine ({run['pooling']} pooling)" for run in runs]
    rows = [[kind, a, b] + [f"{run['cosines'][i]:.3f}" for run in runs] for i, (kind, a, b) in enumerate(PAIRS)]
    means = "; ".join(f"{run['pooling']} pooling — " + ", ".join(f"{k} {m:.3f}" for k, m in sep["means"].items())
                      for run, sep in zip(runs, seps))
    notes = (f"Each sentence is run through the model and its last hidden states are pooled into one vector of "
             f"{first['dimensions']} numbers (llama.cpp: an embeddings context, llama_get_embeddings_seq), then "
             f"normalised to length 1: the cosine of two sentences is the dot product of their vectors, 1 for the "
             f"same direction. Mean cosine per kind of pair: {means}. What these vectors are: {first['kind']}.")
    screen = await host.show_results(f"what is an embedding? cosine similarity of sentence pairs ({host.model_label})",
                                     columns, rows, notes, mark_row=s["best_unrelated_row"], widths={1: 34, 2: 34})
    values: dict[str, Any] = {"pairs": [{"kind": k, "a": a, "b": b} for k, a, b in PAIRS],
                              "cosines": first["cosines"], "dimensions": first["dimensions"],
                              "pooling": first["pooling"], "kind": first["kind"], "means": s["means"],
                              "gap": s["gap"], "margin": s["margin"], "related_below_best_unrelated": s["below"],
                              "sentence_encoder": first["sentence_encoder"]}
    if v == 1:
        last, sl = runs[1], seps[1]
        better = ("last-token pooling" if sl["margin"] > s["margin"] else f"{first['pooling']} pooling")
        headline = (f"{last['pooling']} pooling: related above unrelated by {sl['gap']:+.3f} on average, margin "
                    f"{sl['margin']:+.3f} (lowest related − highest unrelated); {first['pooling']} pooling: "
                    f"{s['gap']:+.3f}, margin {s['margin']:+.3f} — {better} separates them better here; "
                    f"{first['dimensions']} dimensions either way: {last['kind']}")
        host.mark(screen, part="table", text=f"margin {sl['margin']:+.3f} ({last['pooling']}) vs "
                  f"{s['margin']:+.3f} ({first['pooling']})")
        values |= {"cosines_last": last["cosines"], "pooling_last": last["pooling"], "means_last": sl["means"],
                   "gap_last": sl["gap"], "margin_last": sl["margin"]}
        return r.finding("results", headline, **values)
    headline = (f"{_verdict(s)}; unrelated sentences still score {low:.2f}–{high:.2f}; "
                f"{first['dimensions']} dimensions, {first['pooling']} pooling: {first['kind']}")
    host.mark(screen, part="table", text=f"related {s['gap']:+.3f} above unrelated; unrelated still {low:.2f}–"
              f"{high:.2f}")
    return r.finding("results", headline, **values)


# -- what does retrieval change? ------------------------------------------------------------------------------

CHUNK_SIZE = 2000  # characters: every sample document is shorter, so each is one chunk


@dataclass(frozen=True)
class Case:
    question: str
    answer_start: str  # the answer begun, so that the next token is the answer itself
    answers: tuple[str, ...]  # the right answer's forms after answer_start (each a path of tokens)
    label: str


OCTOPUS = Case("How many hearts does an octopus have?", "An octopus has", (" three", " Three", " 3"), "three / 3")
SPIDER = Case("How many legs does a spider have?", "A spider has", (" eight", " Eight", " 8"), "eight / 8")


def sample_index(embedder: Any, cache_dir: Any) -> tuple[Any, Any]:
    """The shipped sample documents indexed with ``embedder`` (one chunk per document) under the cache directory:
    built once per model and pooling, reused after (files already indexed are kept). (Index, BuildReport)."""
    from ...rag import SAMPLE_DOCS, IndexError_, build_index

    out = Path(cache_dir) / "learn" / "sample-index" / f"{embedder.name}-{embedder.pooling}"
    try:
        try:
            report = build_index(SAMPLE_DOCS, embedder, out, size=CHUNK_SIZE)
        except IndexError_:  # another model of the same name, other chunks, or a damaged index: build it anew
            report = build_index(SAMPLE_DOCS, embedder, out, size=CHUNK_SIZE, rebuild=True)
        return report.saved, report
    except IndexError_ as exc:
        raise LearnError(str(exc)) from None


def answer_distribution(engine: Any, messages: list[dict[str, str]], case: Case) -> tuple[np.ndarray, float]:
    """The next-token distribution after ``messages`` and ``case.answer_start`` (decoded afresh, in one batch), and
    the probability that the answer goes on with one of ``case.answers``: each form's tokens, one at a time (a
    digit after a space is two tokens, " " and "3"), their probabilities multiplied; the forms' paths summed."""
    from ...engine.chat import chat_prompt
    from ..runs import next_token_probs

    start = engine.tokenize(case.answer_start, add_bos=False)
    held = len(chat_prompt(engine, messages)[1]) + len(start)
    engine.clear()  # the same route for every prompt: llama.cpp's sums differ a little with the batch split
    p = next_token_distribution(engine, messages, case.answer_start)
    paths: list[list[int]] = []
    for form in case.answers:
        full = engine.tokenize(case.answer_start + form, add_bos=False)
        if full[:len(start)] == start and full[len(start):] not in paths:  # else merged across the boundary
            paths.append(full[len(start):])
    total = 0.0
    for path in paths:
        prob = float(p[path[0]])
        for before, token in zip(path, path[1:]):
            engine.decode([before])
            prob *= float(next_token_probs(engine)[token])
        if len(path) > 1:
            engine.truncate(held)  # back to the answer begun, for the next form
        total += prob
    return p, total


def _retrieve(path: str, cache_dir: Any, questions: list[str], k: int) -> dict[str, Any]:
    """Index the sample documents (or reuse the index) and search it for each question: top-``k`` hits each."""
    from ...engine.embed import Embedder

    with Embedder(path) as emb:
        index, report = sample_index(emb, cache_dir)
        hits = [index.search(emb.embed(q).vector, k) for q in questions]
        return {"hits": hits, "report": report, "chunks": len(index.chunks), "kind": emb.kind}


async def exp_retrieval(r: Runner, v: int) -> Finding:
    """The same question with and without the chunks retrieval brings (variation 1: a question none of the
    documents answers; 2: one chunk against three): the answer's next token, top-5, and P(the right answer)."""
    from ...engine.chat import chat_prompt
    from ...rag import augmented_message

    host = r.host
    await host.ready()
    await host.use_settings()
    path = host.model_file()
    case = SPIDER if v == 1 else OCTOPUS
    ks = (1, 3) if v == 2 else (3,)
    questions = [case.question] + ([OCTOPUS.question] if v == 1 else [])  # v1: an answerable question's top score
    cache_dir = host.cache_dir
    found = await host.in_thread(lambda: _retrieve(path, cache_dir, questions, max(ks)))
    hits = found["hits"][0]
    retrieved = [None] + [hits[:k] for k in ks]  # each column's chunks (none: the question alone)
    conversations = [[{"role": "user", "content": case.question if h is None else augmented_message(
        case.question, h)[0]}] for h in retrieved]
    n_tokens = await host.in_thread(lambda: [len(chat_prompt(host.engine, m)[1]) for m in conversations])
    need = max(n_tokens) + len(case.answer_start) + 8  # the answer begun, and its forms: a few tokens more
    grown = ""
    if need > host.settings.n_ctx:
        grown = f" (the context was {host.settings.n_ctx} tokens: made {need + 64} to hold it)"
        await host.use_settings(n_ctx=need + 64)
    seen = await host.in_thread(lambda: _measure(host.engine, conversations, case))
    for s, n in zip(seen, n_tokens):
        s["tokens"] = n
    rows = _rows(case, ks, retrieved, seen)
    report = found["report"]
    how = (f"built now ({report.files} documents, {report.seconds:.1f} s)" if report.files else
           f"reused ({report.kept} documents indexed before)")
    notes = (f"The sample documents, one chunk each, embedded with this model ({found['kind']}); index {how}. The "
             f"question is embedded the same way and the {' or '.join(map(str, ks))} chunk(s) with the highest "
             "cosine are pasted into the user turn before it (a fixed instruction, then [rank] (file) text, then the "
             f"question){grown}. Both prompts go through the chat template, and the answer is begun with "
             f"“{case.answer_start}”: the next token is the answer itself. P(answer) adds up every form of it "
             f"({', '.join(repr(a) for a in case.answers)}), each token by token. The first chunk retrieved: "
             f"“{visible(shorten(hits[0].chunk.text, 160))}”")
    screen = await host.show_results(f"what does retrieval change? “{case.question}”",
                                     ["", "without retrieval", *(f"with retrieval, k={k}" for k in ks)], rows, notes,
                                     mark_row=5, widths={0: 22})
    base = seen[0]
    host.mark(screen, part="table", text=f"P(answer) {base['p_answer']:.1%} → " + ", ".join(
        f"{s['p_answer']:.1%} (k={k})" for s, k in zip(seen[1:], ks)))
    values: dict[str, Any] = {
        "question": case.question, "answer_start": case.answer_start, "ks": list(ks),
        "hits": [{"rank": h.rank, "score": h.score, "file": h.chunk.source, "text": h.chunk.text} for h in hits],
        "first_source": hits[0].chunk.source, "first_score": hits[0].score, "tokens": n_tokens,
        "added_tokens": [n - n_tokens[0] for n in n_tokens[1:]], "top": [s["top"] for s in seen],
        "p_answer": [s["p_answer"] for s in seen], "moved": [s["moved"] for s in seen[1:]],
        "index_built": report.files, "index_reused": report.kept, "chunks": found["chunks"]}
    if v == 1:
        answerable = found["hits"][1][0]
        values |= {"answerable_first_source": answerable.chunk.source, "answerable_first_score": answerable.score}
    return r.finding("results", _retrieval_headline(v, case, ks, hits, seen, found), **values)


def _measure(engine: Any, conversations: list[list[dict[str, str]]], case: Case) -> list[dict[str, Any]]:
    """For each conversation: the next-token distribution after the answer begun, its top-5, P(the right answer),
    and (after the first) the probability that moved from the first one's (total variation)."""
    from ..runs import top_tokens

    out: list[dict[str, Any]] = []
    for messages in conversations:
        p, p_answer = answer_distribution(engine, messages, case)
        moved = 0.5 * float(np.abs(p - out[0]["p"]).sum()) if out else 0.0
        out.append({"p": p, "top": top_tokens(engine, p, 5), "p_answer": p_answer, "moved": moved})
    return out


def _rows(case: Case, ks: tuple[int, ...], retrieved: list[Any], seen: list[dict[str, Any]]) -> list[list[str]]:
    """The table: top-5 side by side, P(answer) (row 5), probability moved, prompt tokens, the chunks retrieved."""
    n0 = seen[0]["tokens"]
    rows = [[f"top {i + 1}"] + [f"{s['top'][i][0]} {s['top'][i][1]:.1%}" for s in seen] for i in range(5)]
    rows.append([f"P(answer: {case.label})"] + [f"{s['p_answer']:.2%}" for s in seen])
    rows.append(["probability moved", "—"] + [f"{s['moved']:.1%}" for s in seen[1:]])
    rows.append(["prompt tokens", f"{n0}"] + [f"{s['tokens']} (+{s['tokens'] - n0} retrieved)" for s in seen[1:]])
    for rank in range(max(ks)):
        rows.append([f"retrieved #{rank + 1}", "—"] + [
            f"{visible(h[rank].chunk.source)} (cosine {h[rank].score:.3f})" if rank < len(h) else ""
            for h in retrieved[1:]])
    return rows


def _retrieval_headline(v: int, case: Case, ks: tuple[int, ...], hits: list[Any], seen: list[dict[str, Any]],
                        found: dict[str, Any]) -> str:
    base, last = seen[0], seen[-1]
    first = hits[0]
    added = last["tokens"] - base["tokens"]
    ratio = f" (×{last['p_answer'] / base['p_answer']:.1f})" if base["p_answer"] > 0 else ""
    moved = (f"P(“{case.label}” after “{case.answer_start}”) {base['p_answer']:.1%} without retrieval → "
             f"{last['p_answer']:.1%} with k={ks[-1]}{ratio}")
    if v == 1:
        answerable = found["hits"][1][0]
        return (f"none of the documents answers it, yet retrieval brought {len(hits)} chunks all the same: "
                f"{visible(first.chunk.source)} first (cosine {first.score:.3f}; the octopus question's best hit: "
                f"{visible(answerable.chunk.source)} {answerable.score:.3f}) and {added} prompt tokens; {moved}: the "
                f"unrelated text {'lowered' if last['p_answer'] < base['p_answer'] else 'raised'} it and moved "
                f"{last['moved']:.0%} of the probability")
    if v == 2:
        one = seen[1]
        best = "k=1" if one["p_answer"] > last["p_answer"] else f"k={ks[-1]}"
        verdict = (f"{best} helped more here" if max(one["p_answer"], last["p_answer"]) > base["p_answer"]
                   else "neither raised it")
        return (f"k=1 added {one['tokens'] - base['tokens']} prompt tokens, P(“{case.label}”) "
                f"{one['p_answer']:.1%}; "
                f"k={ks[-1]} added {added}, P {last['p_answer']:.1%} (without: {base['p_answer']:.1%}): {verdict} — "
                "the extra chunks were " + ", ".join(visible(h.chunk.source) for h in hits[1:]))
    top1, top1_with = base["top"][0][0], last["top"][0][0]
    return (f"retrieval put {visible(first.chunk.source)} first (cosine {first.score:.3f}) and added {added} prompt "
            f"tokens; {moved}; " + (f"top-1 {top1} → {top1_with}" if top1 != top1_with
                                    else f"the top-1 stayed {top1}")
            + f"; {last['moved']:.0%} of the next token's probability moved")
