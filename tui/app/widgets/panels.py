"""Per-step panels: top-k histogram, sampler-chain trace, KV-cache gauge.

Each is a small line-rendered widget: its ``show(...)`` stores plain data and
the lines are built once per change, not per frame.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from ...safe_text import piece_label, visible
from ...units import human_bytes

BAR = "█"
PARTIALS = " ▏▎▍▌▋▊▉"


escape_piece = piece_label  # a token's bytes as a label (the one sanitiser's)


def fit(text: str, width: int) -> str:
    """Cut or pad ``text`` to exactly ``width`` cells; every panel line goes through here, so this is
    where what came from outside (a recording's preset and stage names, model pieces) is made visible."""
    if width <= 0:
        return ""
    text = visible(text)
    if cell_len(text) <= width:
        return text + " " * (width - cell_len(text))
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…" + " " * (width - used - 1)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar with eighth-cell resolution."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, rest = divmod(eighths, 8)
    text = BAR * full + (PARTIALS[rest] if rest and full < width else "")
    return text + " " * (width - cell_len(text))


def escape(text: str) -> str:
    """Text (model output, paths, errors) safe inside Textual markup: control characters visible,
    every ``[`` escaped."""
    return visible(text, "\n").replace("[", "\\[")


class LinePanel(Widget):
    """Renders a list of styled lines, rebuilt only when the data changes."""

    DEFAULT_CSS = """
    LinePanel { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Strip] = []
        self._build: Callable[[int], list[list[tuple[str, str]]]] | None = None
        self._built_width = -1
        self._styles: dict[str, Style] = {}

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}
        self._built_width = -1

    def style_for(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.rich_style + (self.get_component_rich_style(name) if name else Style())
            self._styles[name] = style
        return style

    def set_builder(self, build: Callable[[int], list[list[tuple[str, str]]]]) -> None:
        """``build(width)`` returns lines of (text, component class) runs."""
        self._build = build
        self._built_width = -1
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._built_width != width:
            base = self.style_for("")
            self._lines = []
            if self._build is not None:
                for runs in self._build(width):
                    segs = [Segment(text, self.style_for(cls)) for text, cls in runs]
                    self._lines.append(Strip(segs).crop_extend(0, width, base))
            self._blank = Strip.blank(width, base)
            self._built_width = width
        if y < len(self._lines):
            return self._lines[y]
        return self._blank


class TopKHistogram(LinePanel, can_focus=True):
    """The k most likely next tokens: probability before the chain (bar) and after it.

    Focused, it is a candidate chooser: ↑/↓ move a cursor over the rows, Enter (or a click on a row) posts
    :class:`TopKHistogram.Chosen`; the screen decides what choosing means (force the pending step, or branch
    from a past one) and the border says what Enter will do.
    """

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False, id="hist.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="hist.down"),
        Binding("enter", "choose", "Choose", id="hist.choose"),
    ]
    COMPONENT_CLASSES = {"hist--title", "hist--before", "hist--after", "hist--removed", "hist--chosen",
                         "hist--dim", "hist--piece", "hist--cursor"}
    DEFAULT_CSS = """
    TopKHistogram > .hist--title { color: $text; text-style: bold; }
    TopKHistogram > .hist--before { color: $primary 50%; }
    TopKHistogram > .hist--after { color: $success; }
    TopKHistogram > .hist--removed { color: $error 70%; }
    TopKHistogram > .hist--chosen { color: $accent; text-style: bold; }
    TopKHistogram > .hist--dim { color: $text-muted; }
    TopKHistogram > .hist--piece { color: $text; }
    TopKHistogram > .hist--cursor { background: $accent 35%; color: $text; text-style: bold; }
    """
    HEAD_LINES = 2  # the title and the entropy line come before the candidate rows

    class Chosen(Message, namespace="histogram"):
        """A candidate was chosen (Enter on the cursor's row, or a click): ``token`` at ``step``."""

        def __init__(self, step: Any, token: int, pending: bool) -> None:
            super().__init__()
            self.step, self.token, self.pending = step, token, pending

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.step: Any = None  # the step shown (None: a message instead)
        self.pending = False
        self.tokens: list[int] = []  # the candidate rows' token ids, in order
        self.cursor = 0
        self._piece: Callable[[int], bytes] | None = None

    def show(self, step: Any, piece: Callable[[int], bytes], *, pending: bool = False) -> None:
        tr = step.trace
        rows = list(zip(tr.top_ids.tolist(), tr.top_p_before.tolist(), tr.top_p_after.tolist()))
        if step is not self.step:  # another step: the cursor starts on the token it chose
            self.cursor = next((i for i, (tok, _, _) in enumerate(rows) if tok == step.token), 0)
        self.step, self.pending, self.tokens, self._piece = step, pending, [tok for tok, _, _ in rows], piece
        self.cursor = min(self.cursor, max(0, len(rows) - 1))
        known = tr.top_k_only  # a remote server's top-K: the tail is unknown, the entropy a lower bound
        served = tr.server_sampled  # the server sampled: its chain (the "after") is not seen
        head = f"step {step.index}" + (" · pending" if pending else "") + (f" · the server's top-{known}" if known
                                                                            else "")
        if tr.entropy != tr.entropy:
            entropy = "H: not exposed"
        elif known:
            entropy = f"H ≥ {tr.entropy_bits:.2f} bits (over its top-{known} only)"
        else:
            entropy = f"H {tr.entropy_bits:.2f} bits"
        prob = "p=? (not exposed)" if step.prob != step.prob else f"p={step.prob:.3f}"
        sub = f"{entropy} · chose {escape_piece(step.piece)!s} {prob}"
        if tr.rank == 0 and rows:
            sub += f" (outside the top-{len(rows)})"
        tail = 1.0 - sum(pb for _, pb, _ in rows)

        def build(width: int) -> list[list[tuple[str, str]]]:
            lines = [[(fit(head, width), "hist--title")], [(fit(sub, width), "hist--dim")]]
            if not rows:
                lines.append([(fit("this server gives no probabilities: no top-K to show", width), "hist--dim")])
                return lines
            piece_w = max(6, min(14, width // 4))
            num_w = 8 if served else 15
            bar_w = max(4, width - piece_w - num_w - 4)
            top = max((pb for _, pb, _ in rows), default=1.0) or 1.0
            at_cursor = self.cursor if self.has_focus else -1  # the cursor shows while the panel has focus
            for row, (tok, pb, pa) in enumerate(rows):
                chosen = tok == step.token
                mark = ("›▶" if chosen else "› ") if row == at_cursor else ("▶ " if chosen else "  ")
                name = fit(escape_piece(piece(tok)), piece_w)
                b = bar(pb / top, bar_w)
                if served:
                    nums, style = f" {pb * 100:5.1f}%", "hist--before"
                else:
                    after = f"{pa * 100:5.1f}%" if pa > 0 else "   cut"
                    nums, style = f" {pb * 100:5.1f}%→{after}", "hist--after" if pa > 0 else "hist--removed"
                lines.append([
                    (mark, "hist--cursor" if row == at_cursor else "hist--chosen" if chosen else "hist--dim"),
                    (name, "hist--cursor" if row == at_cursor else "hist--chosen" if chosen else "hist--piece"),
                    (" ", ""),
                    (b, style),
                    (fit(nums, num_w), "hist--chosen" if chosen else "hist--dim"),
                ])
            if known:
                lines.append([(fit(f"the rest ({max(0.0, tail) * 100:.1f}% of the mass) is beyond what the server "
                                   "returns: unknown", width), "hist--dim")])
            return lines

        self.set_builder(build)
        self._update_hint()

    def clear(self, message: str = "no step yet: type a prompt and press Enter") -> None:
        self.step, self.tokens, self.cursor = None, [], 0
        self.set_builder(lambda width: [[(fit(message, width), "hist--dim")]])
        self._update_hint()

    # -- the chooser ------------------------------------------------------------------------------------

    def hint(self) -> str:
        """What Enter does now (the border says it while the panel has focus)."""
        if self.step is None or not self.tokens:
            return "no candidates to choose from here"
        token = self.tokens[self.cursor]
        label, index = escape_piece(self._piece(token)) if self._piece else str(token), self.step.index
        if token == self.step.token:
            return f"{label} is step {index}'s token: ↑/↓ pick another"
        if self.pending:
            return f"Enter: force {label} at step {index}"
        return f"Enter: continue with {label} from step {index}"

    def _update_hint(self) -> None:
        self.border_subtitle = Text(visible(self.hint())) if self.has_focus else None
        self._built_width = -1  # the cursor is drawn (or not) by the builder
        self.refresh()

    def watch_has_focus(self, has_focus: bool) -> None:
        super().watch_has_focus(has_focus)
        self._update_hint()  # the cursor and the hint show while the panel has focus

    def action_cursor(self, delta: int) -> None:
        if self.tokens:
            self.cursor = min(max(self.cursor + delta, 0), len(self.tokens) - 1)
            self._update_hint()

    def action_choose(self) -> None:
        if self.step is None or not self.tokens:
            self.app.notify("no candidates to choose from yet: generate first", severity="warning")
            return
        self.post_message(self.Chosen(self.step, self.tokens[self.cursor], self.pending))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or self.step is None:
            return
        row = offset.y - self.HEAD_LINES
        if 0 <= row < len(self.tokens):
            self.cursor = row
            self._update_hint()
            self.action_choose()


class ChainTrace(LinePanel):
    """Each sampler stage: candidates in → out, probability mass removed; then the draw."""

    COMPONENT_CLASSES = {"trace--name", "trace--num", "trace--mass", "trace--dim", "trace--draw",
                         "trace--cdf", "trace--hit"}
    DEFAULT_CSS = """
    ChainTrace > .trace--name { color: $secondary; text-style: bold; }
    ChainTrace > .trace--num { color: $text; }
    ChainTrace > .trace--mass { color: $warning; }
    ChainTrace > .trace--dim { color: $text-muted; }
    ChainTrace > .trace--draw { color: $accent; text-style: bold; }
    ChainTrace > .trace--cdf { color: $primary 40%; }
    ChainTrace > .trace--hit { color: $accent; }
    """

    def show(self, step: Any, piece: Callable[[int], bytes], preset: str) -> None:
        tr = step.trace

        def build(width: int) -> list[list[tuple[str, str]]]:
            if tr.server_sampled:  # streamed from a server: it sampled, its chain is not seen
                return [[(fit("chain: the server's own (it sampled this token; its API does not show the chain)",
                              width), "trace--dim")],
                        [(fit(f"→ {escape_piece(step.piece)}" + (
                            f" (rank {tr.rank or '>' + str(len(tr.top_ids))} in its top-{tr.top_k_only})"
                            if tr.top_k_only else " (no probabilities from this server)"), width), "trace--draw")],
                        [(fit("probe mode (o) samples with llmtui's chain on the server's top-K", width),
                          "trace--dim")]]
            title = f"chain: {preset}" + (f" on the server's top-{tr.top_k_only} (probe)" if tr.top_k_only else "")
            lines = [[(fit(title, width), "trace--dim")]]
            name_w = 12
            for st in tr.stages:
                survivors = " ".join(escape_piece(piece(t)) for t in st.top_ids[:3])
                counts = f"{st.n_in:>7,} → {st.n_out:<7,}"
                mass = f"-{st.mass_removed * 100:5.1f}%" if st.mass_removed > 0 else "       "
                rest = max(0, width - name_w - len(counts) - len(mass) - 2)
                lines.append([
                    (fit(st.name, name_w), "trace--name"),
                    (counts, "trace--num"),
                    (" " + mass, "trace--mass"),
                    (" " + fit(survivors, rest), "trace--dim"),
                ])
                if st.note:
                    lines.append([(fit("  " + st.note, width), "trace--dim")])
            chosen = escape_piece(step.piece)
            again = getattr(step, "draw", 1)
            if tr.draw is None:
                lines.append([(fit(f"deterministic → {chosen} (p {tr.prob:.3f})", width), "trace--draw")])
            else:
                nth = f"draw {again} at this step: " if again > 1 else "draw "
                lines.append([(fit(f"{nth}u={tr.draw:.4f} → {chosen} in [{tr.draw_lo:.3f}, {tr.draw_hi:.3f})",
                                   width), "trace--draw")])
                lines.append(self._cdf_line(tr, width))
            return lines

        self.set_builder(build)

    @staticmethod
    def _cdf_line(tr: Any, width: int) -> list[tuple[str, str]]:
        """The cumulative distribution as a strip: the chosen interval lit, ▲ where the draw landed."""
        w = max(10, width - 2)
        lo, hi = int(tr.draw_lo * w), max(int(tr.draw_lo * w) + 1, int(math.ceil(tr.draw_hi * w)))
        at = min(w - 1, int((tr.draw or 0.0) * w))
        runs: list[tuple[str, str]] = [("[", "trace--dim")]
        for x in range(w):
            if x == at:
                runs.append(("▲", "trace--draw"))
            elif lo <= x < hi:
                runs.append(("━", "trace--hit"))
            else:
                runs.append(("─", "trace--cdf"))
        runs.append(("]", "trace--dim"))
        return runs

    def clear(self) -> None:
        self.set_builder(lambda width: [[(fit("the sampler chain's trace appears here", width), "trace--dim")]])


class KvGauge(LinePanel):
    """The KV cache as a strip of cells coloured by origin, and the bytes behind it.

    Cells, left to right as llama.cpp fills them: reused from the previous chat
    turn, prompt, generated, free. ``│`` marks n_keep (what a context shift
    keeps); a shift is listed under the strip. Cells the shown branch shares with
    other branches (several sequences hold them) are drawn ``▓``, in their own colour.
    """

    COMPONENT_CLASSES = {"kv--title", "kv--reused", "kv--prompt", "kv--gen", "kv--free", "kv--dim", "kv--keep",
                         "kv--shift", "kv--shared", "kv--retrieved"}
    DEFAULT_CSS = """
    KvGauge > .kv--title { color: $text; text-style: bold; }
    KvGauge > .kv--reused { color: $primary; }
    KvGauge > .kv--prompt { color: $secondary; }
    KvGauge > .kv--gen { color: $success; }
    KvGauge > .kv--free { color: $panel-lighten-2; }
    KvGauge > .kv--dim { color: $text-muted; }
    KvGauge > .kv--keep { color: $accent; text-style: bold; }
    KvGauge > .kv--shift { color: $warning; }
    KvGauge > .kv--shared { color: $accent; }
    KvGauge > .kv--retrieved { color: $accent; }
    """

    def show(self, *, n_ctx: int, n_past: int, n_prompt: int, bytes_per_token: float, allocated: int,
             type_k: str, type_v: str, n_reused: int = 0, n_keep: int | None = None,
             shifts: tuple[tuple[int, int, int], ...] = (), notes: tuple[str, ...] | None = None,
             shared: tuple[int, ...] = (), retrieved: tuple[str, ...] = ()) -> None:
        """``notes``: lines that replace the bytes (a remote server's cache: its figures, or what it does not
        expose); ``shared``: per position of the shown branch, how many sequences hold its cell;
        ``retrieved``: what a retrieval-augmented turn's chunks cost (tokens, bytes, prompt time)."""
        n_past = min(n_past, n_ctx)
        n_prompt = min(n_prompt, n_past)
        n_reused = min(n_reused, n_prompt)
        n_gen = n_past - n_prompt
        used = bytes_per_token * n_past
        n_shared = sum(1 for holders in shared[:n_past] if holders > 1)

        def origin(cell: int) -> str:
            if cell < n_past and cell < len(shared) and shared[cell] > 1:
                return "kv--shared"
            if cell < n_reused:
                return "kv--reused"
            if cell < n_prompt:
                return "kv--prompt"
            if cell < n_past:
                return "kv--gen"
            return "kv--free"

        def build(width: int) -> list[list[tuple[str, str]]]:
            w = max(4, width)
            runs: list[tuple[str, str]] = []
            keep_at = int(n_keep / n_ctx * w) if (n_keep is not None and n_ctx) else -1
            for x in range(w):
                cell = int((x + 0.5) * n_ctx / w)
                cls = origin(cell)
                ch = "│" if x == keep_at else {"kv--free": "░", "kv--shared": "▓"}.get(cls, "█")
                runs.append((ch, "kv--keep" if x == keep_at else cls))
            pct = n_past / n_ctx * 100 if n_ctx else 0.0
            legend = [("■", "kv--reused"), (f" reused {n_reused:,}  ", "kv--dim")] if n_reused else []
            legend += [("■", "kv--prompt"), (f" prompt {n_prompt - n_reused:,}  ", "kv--dim"),
                       ("■", "kv--gen"), (f" generated {n_gen:,}", "kv--dim")]
            lines = [[(fit(f"{n_past:,} / {n_ctx:,} cells ({pct:.1f}%)", w), "kv--title")], runs, legend]
            if n_shared:
                lines.append([("▓", "kv--shared"),
                              (fit(f" shared with other branches {n_shared:,}", w - 1), "kv--dim")])
            if notes is not None:
                lines += [[(fit(note, w), "kv--dim")] for note in notes]
            else:
                lines += [
                    [(fit(f"{human_bytes(used)} / {human_bytes(allocated)} ({type_k}/{type_v})", w), "kv--dim")],
                    [(fit(f"{human_bytes(bytes_per_token)} per token", w), "kv--dim")],
                ]
            lines += [[(fit(line, w), "kv--retrieved")] for line in retrieved]
            if shifts:
                _i, keep, drop = shifts[-1]
                lines.append([(fit(f"shifted ×{len(shifts)}: kept {keep}, dropped {drop} (last at step {_i})", w),
                               "kv--shift")])
            return lines

        self.set_builder(build)


class RetrievedChunks(LinePanel):
    """A retrieval-augmented turn's chunks: rank, cosine score, source and the start of the text. It takes the
    sampler chain's place while retrieval is on."""

    COMPONENT_CLASSES = {"chunks--title", "chunks--dim", "chunks--score", "chunks--source", "chunks--text"}
    DEFAULT_CSS = """
    RetrievedChunks { display: none; height: 1fr; min-height: 5; border: round $panel-lighten-2;
                      border-title-color: $text-muted; padding: 0 1; }
    RetrievedChunks > .chunks--title { color: $text; text-style: bold; }
    RetrievedChunks > .chunks--dim { color: $text-muted; }
    RetrievedChunks > .chunks--score { color: $accent; text-style: bold; }
    RetrievedChunks > .chunks--source { color: $primary; }
    RetrievedChunks > .chunks--text { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[str] = []  # what it shows, one string per chunk (and the title, the model)

    def show(self, title: str, model: str, hits: tuple[Any, ...]) -> None:
        heads = [f"[{h.rank + 1}] {h.score:.3f} {h.chunk.source}" for h in hits]
        texts = [" ".join(h.chunk.text.split()) for h in hits]
        self.rows = [title, model, *heads]

        def build(width: int) -> list[list[tuple[str, str]]]:
            lines = [[(fit(title, width), "chunks--title")], [(fit(model, width), "chunks--dim")]]
            per = max(1, (self.size.height - len(lines)) // max(1, len(hits)) - 1)  # text lines per chunk
            for hit, text in zip(hits, texts):
                score = f"[{hit.rank + 1}] {hit.score:.3f} "
                lines.append([(score, "chunks--score"), (fit(hit.chunk.source, width - len(score)), "chunks--source")])
                lines += [[(fit("  " + part, width), "chunks--text")]
                          for part in textwrap.wrap(text, max(8, width - 2), max_lines=per, placeholder=" …")]
            return lines

        self.set_builder(build)


def show_text(panel: LinePanel, title: str, lines: tuple[str, ...], style: str) -> None:
    """A panel that has only words to show (a remote server's KV cache when it exposes no n_ctx)."""
    panel.set_builder(lambda width: [[(fit(title, width), style.replace("dim", "title"))],
                                     *[[(fit(line, width), style)] for line in lines]])


class StatusLine(LinePanel):
    """One line of status; updating it repaints one line, never the layout (unlike Static.update)."""

    COMPONENT_CLASSES = {"status--text"}
    DEFAULT_CSS = """
    StatusLine { height: 1; }
    StatusLine > .status--text { color: $text; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = ""

    def set_text(self, text: str) -> None:
        text = visible(text)  # it names models, presets, files and requests from outside
        if text != self.text:
            self.text = text
            self.set_builder(lambda width: [[(fit(text, width), "status--text")]])
