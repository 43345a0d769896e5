"""What the screens an experiment opens hold, without the screens: the headless host's views (no Textual).

Each view carries the data its dashboard screen shows (the anatomy's type table, the tokenizer's chips and
top-5s, a results table, the labs' rows) and its ``tables()``: what a text front end prints. The labs run the
same :mod:`tui.engine.lab` calls their screens run, with the same arguments, so a headless run measures what
the dashboard would. What only a screen can do (plots, the per-token colouring, clicking a token) is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import EngineError
from ..engine.lab import (
    LAB_TYPES as QUANT_LAB_TYPES,  # the quantization lab's variants, as the screen makes
)
from ..safe_text import piece_label
from ..units import human_bytes, human_count


@dataclass(frozen=True, slots=True)
class Table:
    """One table a view shows: what a headless front end prints (cells are text, untrusted: print them
    through :func:`tui.safe_text.visible`)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: str = ""
    mark_row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows],
                "notes": self.notes, "mark_row": self.mark_row}


class View:
    """A screen, headless: ``name`` is what a mark names (the screen's name in the dashboard)."""

    name = "view"

    def tables(self) -> list[Table]:
        return []


class LabView(View):
    """What both headless labs share: the status line a lab's steps write (as the screens' do)."""

    _status = ""

    @property
    def status_text(self) -> str:
        return self._status

    def say(self, text: str) -> None:
        self._status = text


@dataclass(eq=False)
class ResultsView(View):
    """The results screen: a side-by-side table an experiment produced."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: str = ""
    mark_row: int | None = None
    widths: dict[int, int] = field(default_factory=dict)
    name = "results"

    def tables(self) -> list[Table]:
        return [Table(self.title, list(self.columns), [[str(c) for c in row] for row in self.rows], self.notes,
                      self.mark_row)]


@dataclass(eq=False)
class AnatomyView(View):
    """The anatomy screen: the file's summary line and its tensor types."""

    anatomy: Any
    name = "anatomy"

    @property
    def summary(self) -> str:
        from ..engine.models import display_name

        a = self.anatomy
        return (f"{display_name(a.path)} · {a.arch} · {a.file_type} · file {human_bytes(a.file_size)} · tensor "
                f"data {human_bytes(a.total_bytes)} in {len(a.tensors)} tensors · {human_count(a.total_elements)} "
                f"parameters · {a.bits_per_weight:.2f} bits/weight · vocab {a.vocab_size:,}")

    def tables(self) -> list[Table]:
        from ..engine.anatomy import bits_per_weight

        rows = [[t, str(row["tensors"]), f"{row['elements']:,}", human_bytes(row["bytes"]),
                 f"{bits_per_weight(row['bytes'], row['elements']):.2f}"] for t, row in self.anatomy.by_type().items()]
        return [Table("tensor types", ["type", "tensors", "parameters", "bytes", "bits/weight"], rows, self.summary)]


@dataclass(eq=False)
class TokenizerView(View):
    """The tokenizer screen: the text's tokens, and the next-token top-5 of four variants of it."""

    text: str
    special: bool
    result: dict[str, Any]
    name = "tokenizer"

    def tables(self) -> list[Table]:
        tokens = []
        for row in self.result["tokens"]:
            flag = "BOS" if row["bos"] else ("EOS" if row["eos"] else ("special" if row["special"] else ""))
            tokens.append([str(row["id"]), piece_label(row["piece"].encode()),
                           str(row["bytes"]), flag])
        compare = [[f"{label} ({self.result['variants'][label]} tok)",
                    *(f"{piece_label(piece.encode())} {p:.1%}" for piece, p in top)]
                   for label, top in self.result["top"].items()]
        return [Table(f"tokens of {self.text!r}" + (" (special tokens parsed)" if self.special else ""),
                      ["id", "piece", "bytes", ""], tokens, f"{len(tokens)} tokens"),
                Table("next-token top-5 for variants of the text", ["variant", "1", "2", "3", "4", "5"], compare)]


@dataclass(eq=False)
class ModelsView(View):
    """The model picker: every model found (a headless run cannot pick one)."""

    entries: list[Any]
    current: str
    loaded: list[str]
    name = "models"

    def tables(self) -> list[Table]:
        rows = []
        for e in self.entries:
            if e.usable:
                state = "loaded" if e.name == self.current else ("warm" if e.path in self.loaded else "")
                rows.append([e.name, e.arch, e.quant, human_count(e.n_params), human_bytes(e.size),
                             f"{e.n_ctx_train:,}", f"{e.n_vocab:,}", "yes" if e.has_chat_template else "no",
                             e.source, state])
            else:
                rows.append([e.name, "unusable", (e.error or "")[:60], "", "", "", "", "", e.source, ""])
        return [Table("models", ["name", "arch", "quant", "params", "size", "ctx", "vocab", "chat", "source", ""],
                      rows)]


class QuantLab(LabView):
    """The quantization lab (:class:`tui.learn.host.QuantLabView`): an F16 reference and re-quantized variants
    of the model in the lab's models directory, then each compared with the reference — the screen's calls."""

    name = "quant lab"

    def __init__(self, model_path: str, run_guarded: Callable[[Callable[[], Any]], Any], models_dir: Path, *,
                 types: tuple[str, ...] = QUANT_LAB_TYPES, max_tokens: int = 256) -> None:
        self.model_path = model_path
        self.run_guarded = run_guarded  # runs a job while no generation uses the engine (blocking)
        self.models_dir = models_dir
        self.types = types
        self.max_tokens = max_tokens
        self.made: list[Any] = []
        self.result: Any = None
        self.shown = 1
        self._status = ""

    def _variant_paths(self) -> list[str]:
        from ..engine.lab import default_output

        src = Path(self.model_path)
        return [str(default_output(src, q, self.models_dir)) for q in ("f16", *self.types)]

    def variants_exist(self) -> bool:
        return all(Path(p).exists() for p in self._variant_paths())

    async def make_variants(self) -> None:
        self.say("quantizing… (F16 reference, then " + ", ".join(self.types) + ")")
        await asyncio.to_thread(self._make_variants)

    def _make_variants(self) -> None:
        from ..engine.lab import quantize_model

        made = []
        try:
            f16 = quantize_model(self.model_path, "f16", models_dir=self.models_dir, force=True)
            made.append(f16)
            for q in self.types:
                self.say(f"quantizing {q}…")
                made.append(quantize_model(f16.output, q, models_dir=self.models_dir, force=True))
        except EngineError as exc:
            self.say(str(exc))
            return
        self.made = made
        self.say("\n".join(f"{Path(r.output).name}: {human_bytes(r.file_size)}, {r.bits_per_weight:.2f} bits/weight"
                           + (f", {r.fallback[0]}/{r.fallback[1]} tensors fell back to other types"
                              if r.fallback else "") for r in made))

    async def compare(self) -> Any:
        """Compare the variants that exist; the Comparison (None: nothing to compare, or it failed)."""
        from ..engine.lab import compare_models

        paths = [p for p in self._variant_paths() if Path(p).exists()]
        if len(paths) < 2:
            return None
        self.say("comparing… (each model evaluates the built-in text)")
        paths.append(self.model_path)
        try:
            result = await asyncio.to_thread(self.run_guarded, lambda: compare_models(
                paths, max_tokens=self.max_tokens, gen_tokens=16, on_progress=self.say))
        except EngineError as exc:
            self.say(str(exc))
            return self.result
        self.result = result
        self.say(f"reference {Path(result.reference).name} · {len(result.tokens)} tokens")
        self.shown = min(3, len(result.scores) - 1)
        return result

    def show_variant(self, index: int) -> None:
        self.shown = index

    def tables(self) -> list[Table]:
        tables = []
        if self.made:
            tables.append(Table("variants made", ["file", "size", "bits/w", "fell back"],
                                [[Path(r.output).name, human_bytes(r.file_size), f"{r.bits_per_weight:.2f}",
                                  f"{r.fallback[0]}/{r.fallback[1]}" if r.fallback else ""] for r in self.made]))
        res = self.result
        if res is not None:
            rows = [[Path(s.path).stem, human_bytes(s.file_size), f"{s.bits_per_weight:.2f}", f"{s.perplexity:.2f}",
                     f"{s.kl_mean:.4f}", f"{s.kl_p99:.3f}", f"{s.top1_agreement:.1%}", f"{s.gen_tps:.1f}"]
                    for s in res.scores]
            shown = res.scores[self.shown]
            flips = sum(a != b for a, b in zip(shown.top1, res.ref_top1))
            tables.append(Table(f"compared with {Path(res.reference).name} · {len(res.tokens)} tokens",
                                ["model", "size", "bits/w", "PPL", "KL mean", "KL p99", "top-1 agree", "tg t/s"],
                                rows, f"{Path(shown.path).stem}: {flips} top-1 flips of {len(res.ref_top1)}",
                                mark_row=self.shown))
        return tables
