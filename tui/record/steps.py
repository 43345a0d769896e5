"""A generated step as JSON: the one place that turns a :class:`~tui.engine.loop.Step` into data.

Two shapes share one core: the recording's ``step`` line (see the README's
"Recording format": pieces as base64, every stage with its survivors, RSS and
KV bytes) and the ``llmtui generate --json`` line (pieces as text, stages as
``[name, in, out, mass removed]``). Both write the top-k column by column
(parallel lists): cheap to build per token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..engine.loop import Step


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _num(value: float) -> float | None:
    """A figure as JSON: None where it is not known (NaN: a remote server that did not give it)."""
    return None if value != value else value


def _top(step: Step) -> dict[str, Any]:
    tr = step.trace
    return {"token": tr.top_ids.tolist(), "logit": tr.top_logits.tolist(), "p": tr.top_p_before.tolist(),
            "p_after": tr.top_p_after.tolist()}


def step_record(step: Step, *, rss: int = 0, kv_bytes: int = 0, branch: int = 0) -> dict[str, Any]:
    """The recording's ``step`` line (``branch``: its branch of the token tree; 0, the first, is not written)."""
    tr = step.trace
    return {
        "type": "step",
        **({"branch": branch} if branch else {}),
        "i": step.index,
        "token": step.token,
        "piece": _b64(step.piece),
        "text": step.text,
        "prob": _num(step.prob),
        "entropy": _num(tr.entropy),
        "top": _top(step),
        "stages": [[s.name, s.n_in, s.n_out, s.mass_removed, list(s.top_ids), list(s.top_probs), s.note]
                   for s in tr.stages],
        "n_final": tr.n_final,
        "draw": tr.draw,
        "draw_lo": tr.draw_lo,
        "draw_hi": tr.draw_hi,
        "raw_logit": _num(tr.raw_logit),
        "raw_p": _num(tr.raw_p),
        **({"top_k_only": tr.top_k_only} if tr.top_k_only else {}),
        **({"server_sampled": True} if tr.server_sampled else {}),
        **({"forced": True} if step.forced else {}),
        "decode_ms": step.decode_ms,
        "sample_ms": step.sample_ms,
        "n_past": step.n_past,
        "n_ctx": step.n_ctx,
        "eog": step.is_eog,
        "rss": rss,
        "kv_bytes": kv_bytes,
        "t": step.t,
    }


def step_json(step: Step, piece_text: Callable[[int], str]) -> dict[str, Any]:
    """``llmtui generate --json``'s line for one step (``piece_text``: a token's text, cached by the caller)."""
    tr = step.trace
    top = _top(step)
    return {
        "index": step.index,
        "token": step.token,
        "piece": piece_text(step.token),
        "piece_hex": step.piece.hex(),
        "text": step.text,
        "prob": _num(step.prob),
        "entropy": _num(tr.entropy),
        "entropy_is_lower_bound": bool(tr.top_k_only),
        "top_k_only": tr.top_k_only or None,
        "server_sampled": tr.server_sampled,
        "top": {"token": top["token"], "piece": [piece_text(t) for t in top["token"]], "logit": top["logit"],
                "p": top["p"], "p_after": top["p_after"]},
        "stages": [[s.name, s.n_in, s.n_out, s.mass_removed] for s in tr.stages],
        "draw": tr.draw,
        "decode_ms": step.decode_ms,
        "sample_ms": step.sample_ms,
        "n_past": step.n_past,
        "n_ctx": step.n_ctx,
        "eog": step.is_eog,
    }
