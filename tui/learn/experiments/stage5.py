"""Stage 5 — a service: chat turns that reuse the cache, recorded."""

from __future__ import annotations

from pathlib import Path

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
