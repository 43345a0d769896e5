"""Stage 5 — a service: chat turns that reuse the cache, recorded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ...units import shorten
from ..host import Finding, Runner
from ..runs import next_token_distribution, top_tokens, word_probability
from .stage2 import CHAT_TURNS, _chat_turns

HELPFUL = "You are a helpful assistant. Answer briefly."
PIRATE = "You are a pirate. Always answer like a pirate: start with Arr or Ahoy."


async def exp_chat(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    r.host.policy()
    if v == 2:
        return await _system_prompt_effect(r)
    r.host.use_preset("greedy" if v == 0 else "balanced")  # greedy: the recall below is the model's best answer
    system = HELPFUL
    files: list[str] = []
    recording = await host.recording(True) if v == 1 else False
    try:
        def recorded() -> None:
            if v == 1 and host.current().record_path:
                files.append(host.current().record_path)

        seen = await _chat_turns(r, CHAT_TURNS if v != 1 else CHAT_TURNS[:2], r.n(32, 10), system=system,
                                 on_turn=recorded)
    finally:
        if v == 1:
            await host.recording(recording)
    last, reply = seen[-1]
    reused = [t.reused for t, _ in seen]
    if v == 1:
        headline = (f"{len(files)} turn(s) recorded, one session file each; the last one's prompt holds the "
                    f"whole conversation: {Path(files[-1]).name if files else '(none)'}")
        r.host.mark("stream", "recorded")
        return r.finding("stream", headline, files=files, reused=reused)
    # recall, measured: P(" Ada") where the answer says the name, with the history and without it
    question = CHAT_TURNS[-1]
    history = [{"role": "system", "content": system}]
    for (_turn, answer), asked in zip(seen[:-1], CHAT_TURNS):
        history += [{"role": "user", "content": asked}, {"role": "assistant", "content": answer}]

    def job() -> tuple[float, float]:
        eng = host.engine
        names = (" Ada", "Ada")
        with_history = word_probability(eng, next_token_distribution(eng, history + [
            {"role": "user", "content": question}], "Your name is"), names)
        without = word_probability(eng, next_token_distribution(eng, history[:1] + [
            {"role": "user", "content": question}], "Your name is"), names)
        return with_history, without

    p_with, p_without = await host.in_thread(job)
    recalled = "Ada" in reply
    headline = (f"recall: P(“Ada” after “Your name is”) = {p_with:.1%} with the history, {p_without:.2%} without it; "
                f"greedy reply: {shorten(reply, 50)} — the name {'was' if recalled else 'was not'} in it; "
                f"reused per turn: {', '.join(map(str, reused))} tokens")
    r.host.mark("stream", f"the conversation as the template renders it: P(Ada) {p_with:.0%} with it, "
                f"{p_without:.1%} without")
    return r.finding("stream", headline, reused=reused, reply=reply, recalled=recalled, p_name_with=p_with,
                     p_name_without=p_without)


async def _system_prompt_effect(r: Runner) -> Finding:
    """The system prompt's effect where it shows first: the answer's first token, helpful vs pirate."""
    host = r.host
    question = CHAT_TURNS[0]

    def job() -> tuple[list, list, float]:
        eng = host.engine
        ps = [next_token_distribution(eng, [{"role": "system", "content": system},
                                            {"role": "user", "content": question}]) for system in (HELPFUL, PIRATE)]
        moved = 0.5 * float(abs(ps[0] - ps[1]).sum())  # total variation: the probability the prompt moved
        return top_tokens(eng, ps[0], 5), top_tokens(eng, ps[1], 5), moved

    helpful, pirate, moved = await host.in_thread(job)
    rows = [[f"{a[0]} {a[1]:.1%}", f"{b[0]} {b[1]:.1%}"] for a, b in zip(helpful, pirate)]
    new = [t for t, _p in pirate if t not in {h for h, _q in helpful}]
    screen = await host.show_results(f"the answer's first token to “{question}”: system prompt helpful vs pirate",
                                     ["helpful assistant", "pirate"], rows,
                                     f"Same question, same model: the next-token probabilities of the answer's first "
                                     f"token; only the system prompt differs (“{PIRATE}”). Total variation between "
                                     f"the two distributions: {moved:.1%} of the probability moved.")
    headline = (f"first token, helpful: {helpful[0][0]} {helpful[0][1]:.0%}; pirate: {pirate[0][0]} "
                f"{pirate[0][1]:.0%}; the system prompt moved {moved:.0%} of the probability"
                + (f", new in the top-5: {', '.join(new)}" if new else ", the same top-5 tokens")
                + (" — the top-1 did not change: the model follows the system prompt weakly here"
                   if helpful[0][0] == pirate[0][0] else ""))
    host.mark(screen, part="table", text=f"{moved:.0%} of the probability moved by the system prompt")
    return r.finding("results", headline, helpful=helpful, pirate=pirate, moved=moved, new_in_top5=new)


REMOTE_PROMPT = "The capital of France is"


async def exp_remote(r: Runner, v: int) -> Finding:
    """What a server shows over its API, against the full distribution read locally (llmtui's own server on
    this model, on loopback, asked over HTTP as any client would)."""
    import asyncio

    from ...engine.models import describe_file
    from ...remote import connect
    from ...remote.controller import RemoteController
    from ...remote.source import RemoteEngine, lower_bound_entropy
    from ...server import start_local
    from ..runs import next_token_probs

    host = r.host
    await host.ready()
    await host.use_settings()
    host.policy()
    preset = host.use_preset("greedy")

    n = r.n(12, 6)

    def local() -> tuple[np.ndarray, int, str]:
        """The next token's full distribution, and the model's own greedy continuation, in this process."""
        eng = host.engine
        eng.clear()
        eng.decode(eng.tokenize(REMOTE_PROMPT))
        first = next_token_probs(eng)
        pieces = b""
        for _ in range(n):
            token = int(np.argmax(eng.logits()))
            if eng.is_eog(token):
                break
            pieces += eng.piece(token)
            eng.decode([token])
        return first, eng.n_vocab, pieces.decode("utf-8", "replace")

    p, n_vocab, greedy_here = await host.in_thread(local)
    h_full = float(-(p[p > 0] * np.log(p[p > 0])).sum()) / math.log(2)

    def over_http() -> dict[str, Any]:
        # the server runs its requests on the engine thread: this client must not (it would wait on itself)
        server = start_local(host.engine, describe_file(host.model_file()), catalog=host.catalog, preset=preset,
                             seed=1)
        try:
            engine = RemoteEngine(connect(server.url))
            probe = engine.backend.probe(REMOTE_PROMPT, engine.n_probs)
            runs = {}
            for mode in ("stream", "probe") if v == 1 else ("stream",):
                events: list[Any] = []
                ctl = RemoteController(engine, preset, probe=mode == "probe", seed=1, emit=events.append,
                                       max_tokens=n)
                stats = ctl.run(REMOTE_PROMPT)
                counters = [e for e in events if type(e).__name__ == "ServerCounters" and e.step >= 0]
                runs[mode] = (stats, counters)
            return {"info": engine.remote, "probe": probe, "runs": runs}
        finally:
            server.stop()

    seen = await asyncio.to_thread(over_http)
    info, probe = seen["info"], seen["probe"]
    lps = np.array([c.logprob for c in probe.top], dtype=np.float64)
    k = len(lps)
    covered = float(np.exp(lps).sum())
    h_bound = lower_bound_entropy(lps) / math.log(2)
    if v == 1:
        (s_stats, _), (p_stats, counters) = seen["runs"]["stream"], seen["runs"]["probe"]
        reused = [c.cache_n or 0 for c in counters]
        same = s_stats.text == p_stats.text
        merged = next((c.step for c in counters if c.retokenized), None)
        if same:
            verdict = "the same text as the server's own stream"
        elif merged is not None:
            verdict = (f"the server's own text up to step {merged}, where it read our text back as other tokens "
                       "than we had chosen (a text API cannot be stepped exactly; llama-server takes token ids)")
        else:
            verdict = "a different text from the server's own stream"
        headline = (f"probe mode: {len(counters)} requests for {p_stats.generated} tokens, our greedy chain on the "
                    f"server's top-{k}: {verdict}; its cache reused {min(reused, default=0)}–"
                    f"{max(reused, default=0)} prompt tokens per probe")
        rows = [[mode, f"{st.generated}", f"{len(c) if mode == 'probe' else 1}", shorten(st.text, 40)]
                for mode, (st, c) in seen["runs"].items()]
        screen = await host.show_results("stream vs probe on llmtui's own server (loopback)",
                                         ["mode", "tokens", "requests", "text"], rows,
                                         "Streaming: the server samples, one request. Probing: one request of one "
                                         "token per step for the top-K; llmtui's chain picks here.")
        host.mark(screen, part="table", text=f"{len(counters)} requests for {p_stats.generated} tokens")
        return r.finding("results", headline, same_text=same, retokenized_at=merged, requests=len(counters),
                         reused=reused,
                         stream_text=s_stats.text, probe_text=p_stats.text)
    stats, _ = seen["runs"]["stream"]
    rows = [
        ["candidates with a probability", f"{k} (its top-K; the cap is the server's)", f"{n_vocab:,} (the vocabulary)"],
        ["probability they cover", f"{covered:.1%} — the rest: unknown", "100%"],
        ["entropy of the next token", f"≥ {h_bound:.2f} bits (a lower bound)", f"{h_full:.2f} bits"],
        ["the sampler chain's stages", "its default chain's names only (/props)"
         if info.exposes.get("server_sampler_chain") else "not exposed (the server sampled)",
         "every stage, its cut and mass"],
        ["n_ctx, KV cache bytes", (f"n_ctx {info.n_ctx:,}" if info.n_ctx else "n_ctx not exposed")
         + ("; cells via timings" if info.exposes.get("kv") else "; KV not exposed"), "both, per token"],
        ["greedy text", shorten(stats.text, 30), "the same" if greedy_here == stats.text
         else f"differs: {shorten(greedy_here, 30)}"],
    ]
    headline = (f"over its API the server showed {k} of {n_vocab:,} candidates, holding {covered:.1%} of the "
                f"probability; the entropy they give is ≥ {h_bound:.2f} bits, the full distribution's "
                f"{h_full:.2f} bits; the chain and the KV cache stayed inside the server")
    screen = await host.show_results(f"“{REMOTE_PROMPT}” → ? over HTTP ({info.backend} API) vs in this process",
                                     ["", "over the API", "inside the engine"], rows,
                                     "llmtui's own OpenAI-compatible server on this model, on loopback, asked as "
                                     "any client would; the right column reads the same model's logits here.")
    host.mark(screen, part="table", text=f"{covered:.1%} of the probability visible; H ≥ {h_bound:.2f} of "
              f"{h_full:.2f} bits")
    return r.finding("results", headline, k=k, n_vocab=n_vocab, covered=covered, entropy_bound_bits=h_bound,
                     entropy_bits=h_full, text=stats.text, greedy_here=greedy_here, backend=info.backend)
