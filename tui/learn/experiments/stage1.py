"""Stage 1 — run a model: loading, tokens, the next token, the prompt's form."""

from __future__ import annotations

import math
from typing import Any

from ...engine.anatomy import read_anatomy
from ...safe_text import piece_label
from ...units import human_bytes, shorten
from ..host import Finding, LearnError, Runner


async def exp_load(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        return await _model_picker(r)
    path = r.host.model_file()
    anatomy = await r.host.in_thread(lambda: read_anatomy(path, r.host.cache_dir))
    screen = await r.host.show_anatomy(anatomy)
    load = (r.host.load_info or "loaded") + " (one load: 4.5 measures cold and warm loads, repeated)"
    headline = (f"{load}: {human_bytes(anatomy.file_size)} file, {len(anatomy.tensors)} tensors, "
                f"{anatomy.total_elements / 1e6:.1f}M parameters at {anatomy.bits_per_weight:.2f} bits/weight")
    r.host.mark(screen, part="#summary", text=headline)
    return r.finding("anatomy", headline, load_info=load, n_tensors=len(anatomy.tensors),
                     file_size=anatomy.file_size, parameters=anatomy.total_elements)


async def _model_picker(r: Runner) -> Finding:
    found, loaded = await r.host.show_models()
    headline = (f"{found} model(s) found, {loaded} loaded: pick one (Enter), then come back — "
                "the return is warm")
    return r.finding("models", headline, n_models=found, loaded=loaded)


def _is_text(piece: str) -> bool:
    return piece.isascii() and "\\x" not in piece


async def _tokenizer(r: Runner, text: str, special: bool = False) -> tuple[Any, Any]:
    await r.host.idle()
    return await r.host.tokenizer(text, special)


async def exp_tokens(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        text = "<|im_start|>user"
        screen, result = await _tokenizer(r, text, special=True)
        plain = await r.host.in_thread(lambda: r.host.engine.tokenize(text, add_bos=False, parse_special=False))
        special = [row for row in result["tokens"] if row["special"]]
        headline = (f"parsed as special: {len(result['tokens'])} tokens ({len(special)} control token"
                    f"{'s' if len(special) != 1 else ''}); as plain text: {len(plain)} pieces")
        r.host.mark(screen, part="#chips", text=headline)
        return r.finding("tokenizer", headline, n_special_parse=len(result["tokens"]), n_control=len(special),
                         n_plain=len(plain))
    if v == 2:
        text = "今天天氣很好，我們去公園散步吧。"
        screen, result = await _tokenizer(r, text)
        n = len(result["tokens"])
        headline = f"{len(text)} Chinese characters → {n} tokens ({n / len(text):.2f} per character)"
        r.host.mark(screen, part="#chips", text=headline)
        return r.finding("tokenizer", headline, n_chars=len(text), n_tokens=n)
    text = "The capital of France is Paris. 你好 👋"
    screen, result = await _tokenizer(r, text)
    rows = result["tokens"]
    english = [row for row in rows if _is_text(row["piece"])]
    other = len(rows) - len(english)
    steps = await r.host.in_thread(lambda: _bpe(r.host.model_file(), BPE_WORD))
    bpe = (f"BPE built “{BPE_WORD.strip()}” in {len(steps) - 1} merges: "
           + " → ".join(steps[:2] + (["…"] if len(steps) > 4 else []) + steps[-2:] if len(steps) > 3 else steps)
           if len(steps) > 1 else "this model's tokenizer lists no BPE merges (tokenizer.ggml.merges): not a BPE one")
    headline = (f"{len(rows)} tokens: the English words take {len(english)}, the 2 Chinese characters and "
                f"the emoji take {other} (raw bytes); {bpe}")
    r.host.mark(screen, part="#chips", text=headline)
    return r.finding("tokenizer", headline, n_tokens=len(rows), n_english=len(english), n_other=other,
                     pieces=[row["piece"] for row in rows], bpe_word=BPE_WORD, bpe_steps=steps)


BPE_WORD = " unbelievable"  # a word the vocabulary does not hold whole: the merges stop at two tokens


def _bpe(path: str, word: str) -> list[str]:
    """The word's symbols after each merge, lowest rank first (llama.cpp's BPE session, replayed)."""
    from ...engine.bpe import merge_steps, read_merge_ranks, shown

    return [" ".join(shown(s) for s in symbols) for symbols, _pair, _rank in merge_steps(word, read_merge_ranks(path))]


def _piece(host: Any, token: int) -> str:
    return piece_label(host.engine.piece(token))


async def exp_next_token(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    r.host.policy()
    r.host.chat(False)
    r.host.use_preset("balanced" if v == 1 else "greedy")
    await r.host.generate("The capital of France is", 16, step_mode=True)
    step = host.current().pending
    if step is None:
        raise LearnError("the model stopped before its first token")
    tr = step.trace
    if v == 2:
        # re-sample the same logits with wild until a draw lands elsewhere (each r is a new random number)
        before, wild, draws = step, host.catalog.get("wild"), []
        for _ in range(r.n(8, 4)):
            step = (await host.resample(wild)).pending
            draws.append(step)
            if step.token != before.token:
                break
        tr = step.trace
        same = sum(s.token == before.token for s in draws)
        p_greedy = float(tr.top_p_after[tr.top_ids == before.token][0]) if (tr.top_ids == before.token).any() else 0.0
        headline = (f"greedy chose {_piece(host, before.token)}; the same logits re-sampled with wild, "
                    + (f"draw {step.draw}: {_piece(host, step.token)} (rank {tr.rank or '>10'}, u={tr.draw:.3f})"
                       if step.token != before.token else f"{len(draws)} draws")
                    + (f" — {same} draw(s) landed on {_piece(host, before.token)} too: wild still gives it "
                       f"p={p_greedy:.0%}" if same else ""))
        r.host.mark("trace", f"chain: wild, draw {step.draw} at this step — no new llama_decode")
        r.host.mark("hist", f"{_piece(host, step.token)}: p {tr.prob:.0%} after wild's chain")
        return r.finding("trace", headline, greedy_token=before.token, token=step.token, draw=tr.draw,
                         draws=len(draws), same_as_greedy=same, p_greedy_after=p_greedy)
    chosen = _piece(host, step.token)
    if tr.draw is None:
        how = "greedy: no random draw"
    else:
        how = f"drawn: u={tr.draw:.3f} fell in [{tr.draw_lo:.3f}, {tr.draw_hi:.3f})"
    # softmax, shown on the chosen token: p = exp(logit − log Z), Z = Σ exp(logit) over the whole vocabulary
    log_z = tr.raw_logit - math.log(tr.raw_p) if tr.raw_p > 0 else float("nan")
    softmax = f"p = e^(logit {tr.raw_logit:.2f} − log Z {log_z:.2f}) = {tr.raw_p:.1%}"
    headline = (f"step 0: {chosen} p={step.prob:.1%} (raw {tr.raw_p:.1%}, rank {tr.rank}), entropy "
                f"{tr.entropy_bits:.2f} bits; {softmax}; {how} — space accepts it")
    r.host.mark("hist", f"{chosen}: {softmax} · H={tr.entropy_bits:.2f} bits")
    r.host.mark("trace", how)
    return r.finding("hist", headline, token=step.token, draw=tr.draw, entropy=tr.entropy, prob=step.prob,
                     rank=tr.rank, logit=tr.raw_logit, log_z=log_z, raw_p=tr.raw_p)


async def exp_prompt_form(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    if v in (1, 2):
        await r.host.use_settings()
        r.host.policy()
        r.host.chat(v == 2)
        r.host.use_preset("greedy")
        await r.host.generate("Name the capital city of France.", r.n(40, 16))
        text = "".join(s.text for s in host.current().steps)
        first = host.current().steps[0] if host.current().steps else None
        where = "in the chat template" if v == 2 else "as plain text"
        opening = f"first token {_piece(host, first.token)} ({first.trace.raw_p:.0%})" if first else "no token"
        headline = f"{where}: {opening}, then “{shorten(text, 60)}”"
        r.host.mark("stream", "the chat template, then an answer" if v == 2 else "a continuation, not an answer")
        return r.finding("stream", headline, text=text, chat=v == 2)
    screen, result = await _tokenizer(r, "The capital of France is")
    tops = result["top"]

    def top1(label: str) -> str:
        piece, p = tops[label][0]
        return f"{piece_label(piece.encode())} {p:.0%}"

    headline = (f"next token without a trailing space: {top1('no trailing space')}; with one: "
                f"{top1('trailing space')}; with BOS: {top1('with BOS')}, without: {top1('without BOS')}")
    r.host.mark(screen, part="#compare", text=forms_compared(tops))
    return r.finding("tokenizer", headline, top={k: v[0] for k, v in tops.items()}, compared=forms_compared(tops))


def forms_compared(tops: dict[str, list[tuple[str, float]]]) -> str:
    """How many of the forms' top-5 lists differ (by their tokens, in order), and which ones coincide:
    counted from the lists, not assumed."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for label, top in tops.items():
        groups.setdefault(tuple(piece for piece, _p in top[:5]), []).append(label)
    same = [" = ".join(labels) for labels in groups.values() if len(labels) > 1]
    n = len(groups)
    return (f"same text, {len(tops)} forms: {n} different top-5{'s' if n != 1 else ''}"
            + (f" ({'; '.join(same)}: the same tokens in the same order)" if same else ""))
