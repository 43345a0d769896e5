"""Stage 3 — sampling: the chain's stages, presets side by side, the stories experiment."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..host import Finding, Runner


def _runs_table(runs: list[Any]) -> tuple[list[str], list[list[str]]]:
    columns = ["preset", "text", "tokens", "H raw bits", "p after", "rank", "draws", "distinct", "kept per stage"]
    rows = []
    for run in runs:
        stages = "\n".join(f"{s.name}{f' {s.note}' if s.note else ''}: {s.kept_mean:,.0f}" for s in run.stages)
        stop = "eos" if run.stop_reason == "eog" else ("max" if run.stop_reason == "max_tokens" else run.stop_reason)
        rows.append([run.preset, run.text.strip().replace("\n", " ⏎ "), f"{run.n_tokens} ({stop})",
                     f"{run.entropy_mean / 0.6931:.2f}", f"{run.final_p_mean:.0%}", f"{run.rank_mean:.1f}", str(run.draws),
                     f"{run.distinct_ratio:.0%}", stages])
    return columns, rows


async def _preset_runs(r: Runner, prompt: str, presets: list[Any], max_tokens: int,
                       seeds: list[int] | None = None) -> list[Any]:
    from ..runs import run_presets

    host = r.host
    seed = host.settings.seed

    def job() -> list[Any]:
        if seeds is None:
            return run_presets(host.engine, prompt, presets, seed=seed, max_tokens=max_tokens)
        out = []
        for s in seeds:
            (run,) = run_presets(host.engine, prompt, presets[:1], seed=s, max_tokens=max_tokens)
            out.append(dataclasses.replace(run, preset=f"{run.preset} · seed {s}"))
        return out

    runs = await r.host.in_thread(job)
    return runs


async def _show_runs(r: Runner, title: str, runs: list[Any], notes: str, mark_row: int = 0) -> Any:
    columns, rows = _runs_table(runs)
    return await r.host.show_results(title, columns, rows, notes, mark_row=mark_row, widths={1: 44, 8: 20})


def _temp_preset(base: Any, t: float) -> Any:
    p = base.with_param("temp", "t", t)
    return dataclasses.replace(p, name=f"{base.name} T={t:g}")


def _custom(name: str, *specs: tuple[str, dict[str, Any]]) -> Any:
    from ...sampling.presets import Preset, SamplerSpec, validate_specs

    return Preset(name, validate_specs([SamplerSpec(n, p) for n, p in specs], where=name), "learn")


SAMPLER_NOTES = (
    "H raw bits: mean entropy of the model's raw distribution (the model's own uncertainty, before any sampler: "
    "temperature does not change it). p after: mean probability the chosen token had in the distribution after "
    "the chain — what temperature sharpens (high) or flattens (low). rank: mean rank of the "
    "chosen token in the raw distribution (1 = always the most likely). draws: steps decided by a random draw. "
    "distinct: distinct tokens / tokens (low = repetitive). kept per stage: candidates left after each sampler, "
    "mean over the steps.")


async def exp_samplers(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    prompt = "The best way to learn a new language is"
    cat = host.catalog
    if v == 1:
        presets = [_temp_preset(cat.get("balanced"), t) for t in (0.2, 0.7, 1.5)] + [
            _custom("top-p 0.9, then T 1.5", ("top_p", {"p": 0.9}), ("temp", {"t": 1.5}), ("dist", {})),
            _custom("T 1.5, then top-p 0.9", ("temp", {"t": 1.5}), ("top_p", {"p": 0.9}), ("dist", {}))]
        title = "one chain, three temperatures; then temperature after vs before top-p"
    elif v == 2:
        presets = [_custom("top-k 5", ("top_k", {"k": 5}), ("temp", {"t": 1.0}), ("dist", {})),
                   _custom("top-p 0.5", ("top_p", {"p": 0.5}), ("temp", {"t": 1.0}), ("dist", {})),
                   _custom("min-p 0.2", ("min_p", {"p": 0.2}), ("temp", {"t": 1.0}), ("dist", {}))]
        title = "three truncations at T=1"
    else:
        presets = [cat.get(n) for n in ("greedy", "precise", "balanced", "wild")]
        title = "greedy, precise, balanced, wild"
    runs = await _preset_runs(r, prompt, presets, r.n(32, 8))
    screen = await _show_runs(r, f"{title} — “{prompt}”, seed {host.settings.seed}", runs, SAMPLER_NOTES)
    parts = [f"{run.preset}: p after {run.final_p_mean:.0%}, rank {run.rank_mean:.1f}, {run.draws} draws"
             for run in runs]
    headline = "same prompt and seed — " + "; ".join(parts)
    if v == 1:
        after, before = (next(s.kept_mean for s in run.stages if s.name == "top_p") for run in runs[-2:])
        headline = (f"top-p 0.9 kept {after:,.1f} candidates on the T=1 probabilities, {before:,.1f} after T=1.5 "
                    + ("flattened them — order matters; " if before != after else "flattened them — the same here; ")
                    + headline)
    r.host.mark(screen, part="table", text="rank 1.0 = always the top token; higher = the chain let others through")
    return r.finding("results", headline, runs=runs)


async def exp_stories(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    prompt = "The dragon opened its eyes and"
    cat = host.catalog
    seeds = None
    if v == 1:
        presets = [cat.get("creative"), cat.get("wild")]
    elif v == 2:
        presets = [cat.get("wild")]
        seeds = [host.settings.seed + i for i in range(3)]
    else:
        presets = [cat.get("precise"), cat.get("wild")]
    runs = await _preset_runs(r, prompt, presets, r.n(64, 12), seeds)
    screen = await _show_runs(r, f"stories — “{prompt}”", runs, SAMPLER_NOTES, mark_row=len(runs) - 1)
    parts = [f"{run.preset}: mean rank {run.rank_mean:.1f}, {run.distinct_ratio:.0%} distinct" for run in runs]
    headline = "; ".join(parts)
    r.host.mark(screen, part="table", text="wild picks tokens far down the list: a high mean rank")
    return r.finding("results", headline, runs=runs)


TREE_PROMPT = "The dragon opened its eyes and"


async def exp_tree(r: Runner, v: int) -> Finding:
    """Why the same prompt tells different stories: a small token tree. The model's own story first; then, at the
    step where it hesitated most (the highest entropy), branches that take its 2nd and 3rd candidates (or, in
    variation 1, two fresh draws of a random preset there), each continued by the same chain. Branches are
    sequences sharing the prompt's and the common steps' KV cells: each decodes only its own tokens."""
    from ...engine.branching import BranchStart, BranchSwitched
    from ...engine.controller import Controller
    from ...safe_text import piece_label

    host = r.host
    await host.ready()
    await host.use_settings()
    preset = host.catalog.get("balanced" if v == 1 else "greedy")
    n = r.n(24, 8)

    def job() -> tuple[Any, int, list[Any]]:
        events: list[Any] = []
        ctl = Controller(host.engine, preset, seed=host.settings.seed, emit=events.append, max_tokens=n)
        ctl.run(TREE_PROMPT)
        root = ctl.tree_view().path(0)
        k = max(range(len(root)), key=lambda i: root[i].trace.entropy)  # where the model hesitated most
        chosen = root[k].token
        alternatives = [int(t) for t in root[k].trace.top_ids[:3] if int(t) != chosen][:2]
        switched: list[Any] = []
        for tok in alternatives if v != 1 else (None, None):
            start = BranchStart(parent=0, at=k, tokens=(tok,) if tok is not None else (),
                                origin="forced" if tok is not None else "resampled")
            mark = len(events)
            ctl.run("", branch=start)
            switched.append(next(e for e in events[mark:] if isinstance(e, BranchSwitched)))
        return ctl.tree_view(), k, switched

    tree, k, switched = await host.in_thread(job)
    root = tree.path(0)
    hesitation = root[k]
    top = [(piece_label(host.engine.piece(int(t))), float(p))
           for t, p in zip(hesitation.trace.top_ids[:3], hesitation.trace.top_p_before[:3])]
    rows = []
    for b, sw in zip(tree.branches, [None, *switched]):
        path = tree.path(b.id)
        choice = path[k] if len(path) > k else None
        story = "".join(s.text for s in path).strip().replace("\n", " ⏎ ")
        cost = ("the first run: every token decoded" if sw is None else
                f"{sw.reused} cells reused, {sw.evaluated} + {len(b.steps) - 1} decoded")
        rows.append([str(b.id), "—" if b.parent is None else f"step {b.fork}",
                     f"{piece_label(choice.piece)} {choice.prob:.1%}" if choice else "—", story,
                     f"{b.logprob:.2f}", cost])
    texts = {"".join(s.text for s in tree.path(b.id)[k:]) for b in tree.branches}  # the stories from the fork on
    shared = min((sw.reused for sw in switched), default=0)
    screen = await host.show_results(
        f"a token tree — “{TREE_PROMPT}”, {preset.name}", ["branch", "leaves at", "choice (p)", "story",
                                                            "log p", "KV cost"], rows,
        f"At step {k} the model was least sure (entropy {hesitation.trace.entropy / 0.6931:.2f} bits; its top three: "
        + ", ".join(f"{t} {p:.0%}" for t, p in top) + "). Each branch takes another candidate there (variation 1: "
        "another random draw) and goes on with the same chain. log p: the cumulative log-probability of the whole "
        "path. The branches are llama.cpp sequences in one KV cache: the prompt and the steps before the fork are "
        "held once and shared.", mark_row=1, widths={3: 48})
    best = max(tree.branches, key=lambda b: b.logprob)
    first = tree.branches[0]
    verdict = ("the first run's path is the most likely of them" if best.id == first.id else
               f"branch {best.id}'s path is more likely than the first run's ({best.logprob:.1f} vs "
               f"{first.logprob:.1f})" + (": the best token at each step is not the most likely path"
                                          if preset.name == "greedy" else ""))
    choices = [piece_label(tree.path(b.id)[k].piece) for b in tree.branches if len(tree.path(b.id)) > k]
    headline = (f"at step {k}, where the model was least sure ({', '.join(f'{t} {p:.0%}' for t, p in top)}), the "
                f"branches took {', '.join(choices)}: {len(texts)} different stories from one prompt; {verdict}; each "
                f"branch reused {shared} cached cells and decoded only its own tokens")
    host.mark(screen, part="table", text=f"{len(tree.branches)} branches from step {k}, {shared} cells shared")
    branches = [{"id": b.id, "parent": b.parent, "fork": b.fork, "origin": b.origin, "logprob": b.logprob,
                 "text": "".join(s.text for s in tree.path(b.id))} for b in tree.branches]
    return r.finding("results", headline, branches=branches, fork=k, switched=switched, top=top,
                     distinct=len(texts), most_likely=best.id)
