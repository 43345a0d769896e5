"""The prompt and the generated tokens, each a visible token, coloured by probability.

Lines wrap at word boundaries: a break may come before a piece that starts with
whitespace, after one that ends with whitespace, and at a newline (drawn as a
faint ⏎). A word made of several tokens moves to the next line whole; only a
word longer than a line is cut, by cells. Token text is never changed by the
layout: a moved word keeps its leading space, which then starts the new line.

Rendering is incremental: tokens are laid out into lines once (re-laid out only
when the width changes), each line's Strip is cached, and appending a token
repaints only the lines it touched; laying it out costs the token, plus the
word it belongs to when that word moves to a new line. A refresh therefore
costs the same whether the stream holds ten tokens or ten thousand. Two more
things keep a frame cheap while tokens pour in: once the content is taller
than the view, the virtual height grows in chunks (a change of
``virtual_size`` is a layout pass for the whole screen), and following the
newest token scrolls by half a page at a time instead of a line per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ...safe_text import visible
from ...sampling.trace import (
    prob_bucket as bucket,  # buckets -> component classes (theme colours)
)


def display_text(text: str) -> str:
    """A token's text as shown in the stream: tabs drawn as arrows, newlines kept, every other
    control character made visible by the one sanitiser (``\x1b`` → ``␛``)."""
    return visible(text, "\n\t").replace("\t", "→   ")


# a token's text (one line of it) in pieces that each start a word or are whitespace
_PIECES = re.compile(r"\s*\S+|\s+")


@dataclass(slots=True)
class _Tok:
    text: str
    prob: float
    index: int  # step index; PROMPT or RETRIEVED for the prompt's text


PROMPT, RETRIEVED = -1, -2  # the prompt's text, and the retrieved chunks inside it (shaded)


class TokenStream(ScrollView, can_focus=True):
    """Selectable token stream. Posts :class:`TokenStream.Selected` on click."""

    # ScrollView binds these to scrolling; here they move the token selection
    BINDINGS = [
        Binding("left,left_square_bracket", "screen.select(-1)", "Prev token", show=False, id="select.prev"),
        Binding("right,right_square_bracket", "screen.select(1)", "Next token", show=False, id="select.next"),
        Binding("end", "screen.follow", "Live", show=False, id="select.live"),
    ]

    COMPONENT_CLASSES = {
        "token-stream--prompt",
        "token-stream--retrieved",
        "token-stream--even",
        "token-stream--odd",
        "token-stream--p0",
        "token-stream--p1",
        "token-stream--p2",
        "token-stream--p3",
        "token-stream--p4",
        "token-stream--selected",
        "token-stream--pending",
        "token-stream--newline",
    }
    DEFAULT_CSS = """
    /* the scrollbar's room is always kept: the wrap width never depends on whether it is shown yet */
    TokenStream { background: $surface; overflow-x: hidden; overflow-y: scroll; }
    TokenStream > .token-stream--prompt { color: $text-muted; text-style: italic; }
    TokenStream > .token-stream--retrieved { background: $primary 18%; text-style: not italic; }
    TokenStream > .token-stream--even { background: $surface; }
    TokenStream > .token-stream--odd { background: $boost; }
    TokenStream > .token-stream--p0 { color: $error; }
    TokenStream > .token-stream--p1 { color: $warning; }
    TokenStream > .token-stream--p2 { color: $foreground; }
    TokenStream > .token-stream--p3 { color: $primary; }
    TokenStream > .token-stream--p4 { color: $success; }
    TokenStream > .token-stream--selected { background: $accent; color: $background; text-style: bold; }
    TokenStream > .token-stream--pending { background: $secondary 60%; text-style: bold underline; }
    TokenStream > .token-stream--newline { color: $text-disabled; }
    """

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._tokens: list[_Tok] = []
        # layout: per line, a list of (token position in _tokens, text fragment)
        self._lines: list[list[tuple[int, str]]] = [[]]
        self._line_width = 0  # cells used on the last line
        # the word being laid out (it may still grow): where it starts on the last line
        self._word_start = 0  # index into the last line's fragments
        self._word_col = 0  # its first cell
        self._break_after = True  # the last piece ended with whitespace: a word may start next
        self._layout_width = 0
        self._token_lines: list[int] = []  # first line of each token
        self._cache: dict[int, Strip] = {}
        self._styles: dict[str, Style] | None = None
        self.selected: int | None = None  # step index
        self.pending: int | None = None  # step index of a step-mode pending token
        self.follow = True
        self._dirty_from: int | None = None  # first line changed since the last repaint

    # -- content -----------------------------------------------------------------------

    def clear(self) -> None:
        self._tokens.clear()
        self._relayout()

    def set_prompt(self, text: str, shade: tuple[int, int] | None = None) -> None:
        """The prompt; ``shade``: the (start, end) characters of the retrieved chunks in it, drawn apart from
        the question."""
        if shade is None or not 0 <= shade[0] < shade[1] <= len(text):
            parts = [(text, PROMPT)]
        else:
            start, end = shade
            parts = [(text[:start], PROMPT), (text[start:end], RETRIEVED), (text[end:], PROMPT)]
        self._tokens = [_Tok(display_text(part), 1.0, kind) for part, kind in parts if part] or [_Tok("", 1.0, PROMPT)]
        self._relayout()

    def append(self, index: int, text: str, prob: float) -> None:
        self.append_many([(index, text, prob)])

    def replace(self, index: int, text: str, prob: float) -> None:
        """Replace a step's token (re-sampled): a re-layout from that token on."""
        for pos in range(len(self._tokens) - 1, -1, -1):
            if self._tokens[pos].index == index:
                self._tokens[pos] = _Tok(display_text(text), prob, index)
                self._relayout()
                return
        self.append(index, text, prob)

    def truncate_to(self, index: int) -> None:
        """Drop steps >= index."""
        self._tokens = [t for t in self._tokens if t.index < index]
        self._relayout()

    @property
    def token_count(self) -> int:
        return sum(1 for t in self._tokens if t.index >= 0)

    def text(self) -> str:
        return "".join(t.text for t in self._tokens if t.index >= 0)

    def prompt(self) -> str:
        return "".join(t.text for t in self._tokens if t.index < 0)

    def retrieved(self) -> str:
        """The part of the prompt shaded as retrieved text ("" when none is)."""
        return "".join(t.text for t in self._tokens if t.index == RETRIEVED)

    # -- layout ----------------------------------------------------------------------------

    def _width(self) -> int:
        return max(8, self.scrollable_content_region.width or self.size.width or 80)

    def _view_height(self) -> int:
        """The lines the view shows: what scrolling and the scrollbar measure against."""
        return max(1, self.container_size.height - self.scrollbar_size_horizontal)

    def _relayout(self) -> None:
        self._layout_width = self._width()
        self._lines = [[]]
        self._line_width = 0
        self._word_start = self._word_col = 0
        self._break_after = True
        self._token_lines = []
        self._cache.clear()
        for pos in range(len(self._tokens)):
            self._place(pos, invalidate=False)
        self._finish_update()

    def _place(self, pos: int, invalidate: bool = True) -> None:
        width = self._layout_width or self._width()
        self._layout_width = width
        first = len(self._lines) - 1
        self._token_lines.append(-1)  # set by the token's first fragment (a moved word may change it)
        for n, part in enumerate(self._tokens[pos].text.split("\n")):
            if n:
                # show the newline as a faint ⏎ at the end of its line, then break
                self._add(pos, "⏎", 1)
                self._new_line()
                self._break_after = True
            for piece in _PIECES.findall(part):
                self._place_piece(pos, piece, width)
        if self._token_lines[pos] < 0:  # an empty token
            self._token_lines[pos] = len(self._lines) - 1
        if invalidate:
            # from ``first``: a word that moved to a new line left this one changed too
            for y in range(first, len(self._lines)):
                self._cache.pop(y, None)
            self._dirty_from = first if self._dirty_from is None else min(self._dirty_from, first)

    def _place_piece(self, pos: int, piece: str, width: int) -> None:
        """Lay out one piece of a token (no newline in it), wrapping at the last word boundary."""
        if piece[0].isspace() or self._break_after:
            self._word_start, self._word_col = len(self._lines[-1]), self._line_width
        self._break_after = piece[-1].isspace()
        while piece:
            room = width - self._line_width
            size = cell_len(piece)
            if size <= room:
                self._add(pos, piece, size)
                return
            if self._word_col:
                self._carry_word()  # the word starts a new line, whole; cut below if it is still too long
                continue
            # a word longer than a whole line: the only thing cut mid-word, by cells
            cut, used = 0, 0
            while cut < len(piece) and used + cell_len(piece[cut]) <= room:
                used += cell_len(piece[cut])
                cut += 1
            if cut:
                self._add(pos, piece[:cut], used)
                piece = piece[cut:]
            self._new_line()  # the word goes on at the start of the next line

    def _add(self, pos: int, fragment: str, cells: int) -> None:
        if self._token_lines[pos] < 0:
            self._token_lines[pos] = len(self._lines) - 1
        self._lines[-1].append((pos, fragment))
        self._line_width += cells

    def _new_line(self) -> None:
        self._lines.append([])
        self._line_width = 0
        self._word_start = self._word_col = 0

    def _carry_word(self) -> None:
        """Move the word being laid out from the end of the last line to a new line."""
        old_y = len(self._lines) - 1
        line = self._lines[-1]
        moved = line[self._word_start:]
        del line[self._word_start:]
        self._lines.append(moved)
        self._line_width -= self._word_col
        self._word_start = self._word_col = 0
        # a token whose text now starts on the new line is found there (selection, scrolling to a step);
        # only the word's first token can keep a fragment (before a space inside it) on the old line
        kept = line[-1][0] if line else None
        for pos, _ in moved:
            if pos != kept and self._token_lines[pos] == old_y:
                self._token_lines[pos] = old_y + 1

    CHUNK = 64  # once the content is taller than the view, the virtual height grows by this many lines

    def _update_virtual_size(self) -> None:
        n = len(self._lines)
        width = self._layout_width or self._width()
        view = self._view_height()
        height = self.virtual_size.height
        if n <= view:
            height = view  # it all fits: nothing to scroll, no scrollbar thumb
        elif not n <= height <= -(-n // self.CHUNK) * self.CHUNK:
            height = -(-n // self.CHUNK) * self.CHUNK
        if self.virtual_size != Size(width, height):
            self.virtual_size = Size(width, height)
        if self.scroll_y > self.max_scroll_y:  # less content, or a taller view: nothing scrolled past the end
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def _finish_update(self) -> None:
        n = len(self._lines)
        self._update_virtual_size()
        view = self._view_height()
        if self.follow and n > self.scroll_y + view:
            # jump so the newest line sits mid-view: the next half page needs no scrolling
            self.scroll_to(y=max(0, n - view // 2), animate=False, immediate=True)
            self._dirty_from = None
            self.refresh()
            return
        if self._dirty_from is None:
            self.refresh()
        else:
            self.refresh_lines(self._dirty_from, n - self._dirty_from)
            self._dirty_from = None

    def follow_latest(self) -> None:
        """Follow new tokens again, showing the last lines of content (not the padding below)."""
        self.follow = True
        self.scroll_to(y=max(0, len(self._lines) - self._view_height()), animate=False, immediate=True)

    def append_many(self, items: list[tuple[int, str, float]]) -> None:
        """Append several tokens with one repaint."""
        for index, text, prob in items:
            self._tokens.append(_Tok(display_text(text), prob, index))
            self._place(len(self._tokens) - 1)
        self._finish_update()

    def on_resize(self, event: events.Resize) -> None:
        if self._width() != self._layout_width:
            self._relayout()
        else:
            self._cache.clear()
            self._update_virtual_size()  # a taller view may now hold it all, a shorter one not
        if self.follow and self._tokens:
            self.follow_latest()  # a taller or shorter view still ends on the newest line

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._cache.clear()

    # -- selection ------------------------------------------------------------------------------

    def select(self, index: int | None) -> None:
        old, self.selected = self.selected, index
        self._invalidate_step(old)
        self._invalidate_step(index)
        if index is not None:
            self._scroll_to_step(index)
        self.refresh()

    def set_pending(self, index: int | None) -> None:
        old, self.pending = self.pending, index
        self._invalidate_step(old)
        self._invalidate_step(index)
        self.refresh()

    def _positions_of(self, index: int | None) -> list[int]:
        if index is None:
            return []
        return [pos for pos in range(len(self._tokens) - 1, max(-1, len(self._tokens) - 4000), -1)
                if self._tokens[pos].index == index][:1]

    def _invalidate_step(self, index: int | None) -> None:
        for pos in self._positions_of(index):
            start = self._token_lines[pos] if pos < len(self._token_lines) else 0
            for y in range(start, min(len(self._lines), start + 4)):
                self._cache.pop(y, None)

    def _scroll_to_step(self, index: int) -> None:
        for pos in self._positions_of(index):
            y = self._token_lines[pos]
            if not (self.scroll_y <= y < self.scroll_y + self.size.height):
                self.scroll_to(y=max(0, y - self.size.height // 2), animate=False)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        y = int(self.scroll_y) + offset.y
        x = offset.x + int(self.scroll_x)
        if not 0 <= y < len(self._lines):
            return
        col = 0
        for pos, frag in self._lines[y]:
            col += cell_len(frag)
            if x < col:
                index = self._tokens[pos].index
                if index >= 0:
                    self.post_message(self.Selected(index))
                return

    # -- rendering ----------------------------------------------------------------------------------

    def _style_table(self) -> dict[str, Style]:
        if self._styles is None:
            names = ["prompt", "retrieved", "even", "odd", "selected", "pending", "newline",
                     *(f"p{i}" for i in range(5))]
            self._styles = {n: self.get_component_rich_style(f"token-stream--{n}") for n in names}
            self._styles["base"] = self.rich_style
        return self._styles

    def render_line(self, y: int) -> Strip:
        line_y = int(self.scroll_y) + y
        width = self.size.width
        base = self._style_table()["base"]
        if line_y >= len(self._lines):
            return Strip.blank(width, base)
        strip = self._cache.get(line_y)
        if strip is None:
            strip = self._render_stream_line(line_y).crop_extend(0, width, base)
            self._cache[line_y] = strip
        return strip

    def _render_stream_line(self, line_y: int) -> Strip:
        st = self._style_table()
        base = st["base"]
        segments = []
        for pos, frag in self._lines[line_y]:
            tok = self._tokens[pos]
            if tok.index < 0:
                style = base + st["prompt"] + (st["retrieved"] if tok.index == RETRIEVED else Style())
            else:
                style = base + st["even" if tok.index % 2 == 0 else "odd"] + st[f"p{bucket(tok.prob)}"]
                if tok.index == self.pending:
                    style += st["pending"]
                elif tok.index == self.selected:
                    style += st["selected"]
            if frag == "⏎":
                style += st["newline"]
            segments.append(Segment(frag, style))
        return Strip(segments)
