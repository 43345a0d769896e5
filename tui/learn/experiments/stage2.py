"""Stage 2 — the KV cache: what it holds, what new tokens cost, long contexts, the context shift."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...engine.errors import ContextError
from ...engine.kv import type_bytes
from ...units import human_bytes
from ..host import Finding, LearnError, Runner
from ..runs import ms_per_token_by_position, recall_after_shift


def _kv_figures(host: Any) -> dict[str, Any]:
    kv = host.engine.kv_layout()
    n_past = host.engine.n_past
    values = kv.n_head_kv * kv.head_dim_k
    return {"n_past": n_past, "used": kv.used(n_past), "bytes_per_token": kv.bytes_per_token,
            "allocated": kv.allocated, "type": f"{kv.type_k}/{kv.type_v}", "n_ctx": host.engine.n_ctx,
            # the derivation: 2 (K and V) × layers × KV heads × head size × bytes per value
            "n_layer": kv.n_layer, "n_head_kv": kv.n_head_kv, "head_dim": kv.head_dim_k,
            "value_bytes": type_bytes(kv.type_k, values) / values}


async def exp_kv_cache(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    r.host.policy()
    r.host.chat(False)
    r.host.use_preset("balanced")
    base = None
    if v == 1:
        await r.host.use_settings()
        base = host.engine.kv_layout().bytes_per_token
        await r.host.use_settings(type_k="q8_0", type_v="q8_0")
    elif v == 2:
        await r.host.use_settings()
        base = host.engine.kv_layout().allocated
        await r.host.use_settings(n_ctx=host.base_settings.n_ctx * 4)
    else:
        await r.host.use_settings()
    run = await r.host.generate("Once upon a time", r.n(48, 12))
    f = _kv_figures(host)
    # the cells, as the KV panel counts them: the last token drawn is written only when the next decode
    # evaluates it, so a run of 48 tokens leaves 47 of them in the cache
    in_cache = f["n_past"] - run.n_prompt
    drawn = len(run.steps)
    generated = (f"{in_cache} generated" if in_cache == drawn
                 else f"{in_cache} of the {drawn} generated, the last not decoded yet")
    headline = (f"{f['n_past']} cells ({run.n_prompt} prompt + {generated}) × {human_bytes(f['bytes_per_token'])} = "
                f"{human_bytes(f['used'])} used of {human_bytes(f['allocated'])} allocated for n_ctx "
                f"{f['n_ctx']:,} ({f['type']})")
    # the mechanism under the total: per layer, one K row and one V row per cell; a cell is (position, sequence)
    last = f["n_past"] - 1
    layout = (f"each of the {f['n_layer']} layers keeps, per cell, K [{f['n_head_kv']} KV heads × {f['head_dim']}] and "
              f"V [{f['n_head_kv']} × {f['head_dim']}] in {f['type'].split('/')[0]}; cells 0–{last} hold positions "
              f"0–{last} of sequence 0")
    headline += f"; {layout}"
    if v == 1:
        headline += f"; f16 needs {human_bytes(base)} per token: ×{f['bytes_per_token'] / base:.2f}"
    elif v == 2:
        headline += f"; n_ctx {host.base_settings.n_ctx:,} allocated {human_bytes(base)}: allocation is up front"
    r.host.mark("kv", f"{human_bytes(f['used'])} = {f['n_past']} × {human_bytes(f['bytes_per_token'])}")
    return r.finding("kv", headline, base=base, n_prompt=run.n_prompt, generated=drawn, generated_in_cache=in_cache,
                     layout=layout, **f)


CHAT_TURNS = ["Hi! My name is Ada. What is a cat?", "And what is a dog?", "What is my name?"]


async def _chat_turns(r: Runner, turns: list[str], max_tokens: int, *, fresh: bool = True,
                      system: str | None = None, on_turn: Callable[[], None] | None = None) -> list[Any]:
    host = r.host
    if fresh or not host.chat_mode:
        r.host.chat(True, system)
    seen = []
    for text in turns:
        await r.host.generate(text, max_tokens)
        if host.current().chat_turn is None:
            raise LearnError("the chat turn reported no reuse figures")
        seen.append((host.current().chat_turn, "".join(s.text for s in host.current().steps).strip()))
        if on_turn is not None:
            on_turn()
    return seen


async def exp_new_tokens(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    if v == 1 and host.chat_mode and host.chat_turns() >= 4:
        before = host.current().chat_turn
        turns = await _chat_turns(r, CHAT_TURNS[2:], r.n(24, 10), fresh=False)
    else:
        await r.host.use_settings()
        r.host.policy()
        r.host.use_preset("balanced")
        before = None
        turns = await _chat_turns(r, CHAT_TURNS[:3] if v == 1 else CHAT_TURNS[:2], r.n(24, 10))
        if len(turns) > 2:
            before = turns[-2][0]
    turn = turns[-1][0]
    headline = (f"this turn reused {turn.reused:,} cached tokens, evaluated "
                f"only {turn.evaluated:,} new ones (saved ~{turn.saved_ms:.0f} ms)")
    if before is not None:
        headline += f"; the turn before reused {before.reused:,}"
    r.host.mark("kv", f"reused {turn.reused:,} · new {turn.evaluated:,}")
    return r.finding("kv", headline, reused=turn.reused, evaluated=turn.evaluated,
                     reused_before=before.reused if before else None)


async def exp_long_context(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    r.host.chat(False)
    if v == 2:
        return await _long_prompt(r)
    n_ctx = 4_000_000
    cache = "q8_0" if v == 1 else "f16"

    def probe() -> tuple[ContextError | None, int, int, int]:
        from ...engine import memory

        settings = host.engine.settings.with_(type_k=cache, type_v=cache)
        available = memory.available_memory()
        refused = None
        try:
            memory.check(host.engine.dims, n_ctx, settings, available)
        except ContextError as exc:
            refused = exc
        kv, compute = memory.estimate_bytes(host.engine.dims, n_ctx, settings)  # with these cache types
        return refused, kv, compute, available

    refused, kv, compute, available = await r.host.in_thread(probe)
    message = str(refused) if refused is not None else None
    largest = refused.largest_n_ctx if refused is not None and refused.largest_n_ctx else n_ctx
    headline = (f"n_ctx {n_ctx:,} with a {cache} cache needs {human_bytes(kv)} of KV (+{human_bytes(compute)}): "
                + (f"refused — {human_bytes(available)} available, the largest n_ctx that fits is ~{largest:,}"
                   if message else f"it fits in the {human_bytes(available)} available"))
    if message:
        host.notify(message, severity="warning", timeout=12)
    r.host.mark("kv", f"{cache}: ≤ ~{largest:,} tokens fit")
    return r.finding("kv", headline, message=message, kv_bytes=kv, available=available, largest=largest,
                     cache=cache)


async def _long_prompt(r: Runner) -> Finding:
    """A real long prompt: ms per token against the position it is evaluated at, then a new token's cost
    near the start and after the whole prompt (each one attends to every cached cell)."""
    host = r.host
    n, chunk, gen = r.n(3072, 512), r.n(512, 128), r.n(8, 4)
    await host.use_settings(n_ctx=n + 256)

    def job() -> dict[str, Any]:
        from ...engine.settings import default_threads, logical_cpus
        from .stage4 import busy_warning, under_load

        tokens = host.engine.tokenize(FILLER * (n // 30 + 1), add_bos=None)[:n]
        out, before, after = under_load(lambda: ms_per_token_by_position(host.engine, tokens, chunk, gen))
        return {**out, "busy": busy_warning(before, after, logical_cpus(), default_threads())}

    out = await host.in_thread(job)
    rows = [[f"{start:,}–{min(start + chunk, out['n_tokens']) - 1:,}", f"{ms:.2f}"] for start, ms in out["prompt"]]
    first, last = out["prompt"][0][1], out["prompt"][-1][1]
    notes = (f"One new token near the start of the context: {out['gen_ms_early']:.1f} ms (median of {gen}); after "
             f"{out['n_tokens']:,} cached tokens: {out['gen_ms_late']:.1f} ms. Each token's attention reads the K and V "
             "of every cell before it, so the cost per token grows with the position while the weights read stay the "
             "same. Each chunk is timed once: the trend is the lesson, not the digits."
             + (f"\n\n⚠ {out['busy']}." if out["busy"] else ""))
    screen = await host.show_results(f"a {out['n_tokens']:,}-token prompt: ms per token by position",
                                     ["positions", "ms per token"], rows, notes, mark_row=len(rows) - 1)
    headline = (f"prompt {first:.2f} → {last:.2f} ms/token from position 0 to {out['prompt'][-1][0]:,} "
                f"(×{last / first:.2f}); a new token: {out['gen_ms_early']:.1f} ms at the start, "
                f"{out['gen_ms_late']:.1f} ms after {out['n_tokens']:,} tokens")
    host.mark(screen, part="table", text=f"×{last / first:.2f} per token from the first chunk to the last")
    return r.finding("results", headline, prompt=out["prompt"], gen_ms_early=out["gen_ms_early"],
                     gen_ms_late=out["gen_ms_late"], n_tokens=out["n_tokens"], busy=out["busy"])


async def exp_shift(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings(n_ctx=256)
    r.host.chat(False)
    r.host.use_preset("balanced")
    r.host.policy("stop" if v == 1 else "shift", -1, ignore_eos=True)
    try:
        await r.host.generate("Once upon a time, in a small village by the sea,", r.n(600, 320))
    finally:
        r.host.policy("stop" if v == 1 else "shift", -1, ignore_eos=False)
    n = len(host.current().steps)
    reason = host.current().summary.get("stop_reason")
    if v == 1:
        headline = f"policy stop: {n} tokens, then {reason} — the 256-cell context is full"
        r.host.mark("kv", f"full after {n} tokens")
        return r.finding("kv", headline, steps=n, stop_reason=reason, shifts=len(host.current().shifts))
    shifts = host.current().shifts
    if shifts:
        _at, keep, drop = shifts[0]
        headline = (f"{len(shifts)} context shift(s) in a 256-cell context: each kept the first {keep} "
                    f"(n_keep) and dropped {drop}, then shifted the rest back (RoPE re-rotated); {n} tokens")
    else:
        headline = f"no shift happened ({n} tokens, {reason})"
    # what a shift forgets: a fact, then filler, then the question — with the fact's cells kept or shifted out
    await host.idle()
    recall = await host.in_thread(lambda: recall_after_shift(host.engine, *SHIFT_FACT))
    headline += (f"; a fact pushed out: P(“pineapple”) {recall['in_cache']:.1%} with its cells in the cache, "
                 f"{recall['shifted_out']:.4%} after a shift dropped its {recall['fact_tokens']} cells "
                 f"(never seen: {recall['never_seen']:.4%})")
    r.host.mark("kv", f"{len(shifts)} shift(s) · {n} tokens in n_ctx 256 · a dropped fact: "
                f"{recall['in_cache']:.0%} → {recall['shifted_out']:.2%}")
    return r.finding("kv", headline, shifts=len(shifts), steps=n, stop_reason=reason,
                     first_shift=shifts[0] if shifts else None, recall=recall)


FILLER = ("The weather was mild that week, and the village went about its business: the baker baked, the fisher "
          "mended nets, and children ran along the harbour wall until the evening bell. ")
SHIFT_FACT = ("The secret word is pineapple. ", FILLER * 2, " The secret word is", " pineapple")
