"""Predict, then run: a question asks for a guess before its experiment, then sets the guess beside what
was measured and how it is derived (no Textual here: the Learn screen asks, the finding answers).

Each prediction reads its answer and its derivation from the finding's values — what the experiment
measured on this model, never a stored number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..units import human_bytes


@dataclass(frozen=True)
class Prediction:
    ask: str  # the question put before the run
    kind: str  # "number" or "choice"
    answer: Callable[[dict[str, Any]], Any]  # from the finding's values: what was measured
    derivation: Callable[[dict[str, Any]], str]  # how that answer comes about
    choices: tuple[str, ...] = ()  # for "choice": the accepted answers (lower case)
    unit: str = ""


class GuessError(ValueError):
    """A guess that does not fit the question (said in one line)."""


def parse_guess(prediction: Prediction, text: str) -> Any:
    """The learner's guess as the answer's type; GuessError with what is expected."""
    text = text.strip().lower()
    if prediction.kind == "number":
        try:
            value = float(text.replace(",", "").removesuffix(prediction.unit.lower()).strip())
        except ValueError:
            raise GuessError(f"a number{f' ({prediction.unit})' if prediction.unit else ''}, e.g. 12") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise GuessError("a finite number")
        return value
    aliases = {"y": "yes", "n": "no"}
    text = aliases.get(text, text)
    if text not in prediction.choices:
        raise GuessError("one of: " + ", ".join(prediction.choices))
    return text


def verdict(prediction: Prediction, guess: Any, values: dict[str, Any]) -> str:
    """One line: the guess, the measurement, how far apart, and the derivation."""
    answer = prediction.answer(values)
    how = prediction.derivation(values)
    if prediction.kind == "number":
        shown = f"{answer:,.1f}".removesuffix(".0")
        off = guess - answer
        close = abs(off) <= max(1.0, 0.1 * abs(answer))
        mark = "✓ right" if off == 0 else ("≈ close" if close else "✗ off")
        unit = f" {prediction.unit}" if prediction.unit else ""
        return (f"you guessed {guess:,.1f}".removesuffix(".0") + f"{unit}; measured {shown}{unit} — {mark}"
                + (f" by {abs(off):,.1f}".removesuffix(".0") if off else "") + f". {how}")
    return f"you guessed {guess}; measured: {answer} — {'✓ right' if guess == answer else '✗ not this time'}. {how}"


CONTEXT_8K = 8192


def _kv_derivation(v: dict[str, Any]) -> str:
    return (f"2 (K and V) × {v['n_layer']} layers × {v['n_head_kv']} KV heads × {v['head_dim']} values × "
            f"{v['value_bytes']:g} B ({v['type']}) = {v['bytes_per_token']:,.0f} B = "
            f"{human_bytes(v['bytes_per_token'])} per token")


def _variants(v: dict[str, Any]) -> list[tuple[str, float]]:
    """(type, KL) of the variants the lab made — not the reference, not the loaded model it compares too."""
    from ..engine.lab import LAB_TYPES, variant_type

    named = [(variant_type(path).lower(), kl) for path, kl, _top1 in v["scores"][1:]]
    return [(name, kl) for name, kl in named if name in LAB_TYPES]


def _ptq_best(v: dict[str, Any]) -> str:
    scores = _variants(v)
    return min(scores, key=lambda s: s[1])[0] if scores else "?"


PREDICTIONS: dict[str, Prediction] = {
    "s1-tokens": Prediction(
        ask="How many tokens is “The capital of France is Paris. 你好 👋”?",
        kind="number", unit="tokens",
        answer=lambda v: v["n_tokens"],
        derivation=lambda v: (f"the English words and the full stop take {v['n_english']} (a word with its "
                              f"leading space is often one token), the 2 Chinese characters and the emoji "
                              f"{v['n_other']}: their UTF-8 bytes are split into pieces the vocabulary has"),
    ),
    "s1-prompt": Prediction(
        ask="After “The capital of France is”, does a trailing space change the most likely next token? (yes/no)",
        kind="choice", choices=("yes", "no"),
        answer=lambda v: "yes" if v["top"]["no trailing space"][0] != v["top"]["trailing space"][0] else "no",
        derivation=lambda v: (f"top-1 without the space: {v['top']['no trailing space'][0]}, with it: "
                              f"{v['top']['trailing space'][0]} — the space is its own token, so the model "
                              "continues from a different last token"),
    ),
    "s2-kv-cache": Prediction(
        ask=f"How many MiB of KV cache would {CONTEXT_8K:,} tokens take in this model at f16?",
        kind="number", unit="MiB",
        answer=lambda v: round(v["bytes_per_token"] * CONTEXT_8K / 2**20, 1),
        derivation=lambda v: (f"{_kv_derivation(v)}; × {CONTEXT_8K:,} tokens = "
                              f"{human_bytes(v['bytes_per_token'] * CONTEXT_8K)}"),
    ),
    "s4-ptq": Prediction(
        ask="The lab makes q8_0, q5_1, q4_0 and q2_k variants: which one will stay closest to the reference (the "
            "lowest KL)?",
        kind="choice", choices=("q8_0", "q5_1", "q4_0", "q2_k"),
        answer=lambda v: _ptq_best(v),
        derivation=lambda v: ("KL per variant: " + ", ".join(f"{name} {kl:.3f}" for name, kl in _variants(v))
                              + " — more bits per weight, a smaller rounding error, a closer distribution"),
    ),
}


def prediction_for(question_id: str, variant: int) -> Prediction | None:
    """The question's prediction (its main experiment only: the variations change what is measured)."""
    return PREDICTIONS.get(question_id) if variant == 0 else None
