"""The token stream's layout on its own: word-aware wrapping, laid out incrementally, and a
virtual height that shows no scrollbar thumb while everything fits."""

from __future__ import annotations

from itertools import pairwise

from rich.cells import cell_len
from textual.app import App, ComposeResult

from tui.app.widgets.token_stream import TokenStream

# " th" ends exactly at the edge of a 20-cell line: "e" does not fit, and the word " the" moves
STORY = [(0, " The"), (1, " is"), (2, "land"), (3, " was"), (4, " a"), (5, " th"), (6, "e"), (7, " old"),
         (8, " sto"), (9, "ry"), (10, ".")]
STORY_LINES = [" The island was a", " the old story."]


class StreamApp(App[None]):
    """One TokenStream that wraps at ``wrap`` cells (the scrollbar's room is kept beside it)."""

    def __init__(self, wrap: int = 20, rows: int | None = None) -> None:
        super().__init__()
        self.wrap, self.rows = wrap, rows
        self.selected: list[int] = []

    def compose(self) -> ComposeResult:
        stream = TokenStream()
        stream.styles.width = self.wrap + stream.styles.scrollbar_size_vertical
        stream.styles.height = self.rows if self.rows is not None else "1fr"
        yield stream

    def on_token_stream_selected(self, event: TokenStream.Selected) -> None:
        self.selected.append(event.index)


def lines(stream: TokenStream) -> list[str]:
    return ["".join(fragment for _, fragment in line) for line in stream._lines]


def rendered(stream: TokenStream) -> list[str]:
    """What the view draws, line by line (trailing blanks dropped)."""
    return [stream.render_line(y).text.rstrip() for y in range(stream.size.height)]


def assert_word_boundaries(stream: TokenStream) -> None:
    """Every break is at a word boundary, a newline, or cuts a word that fills a whole line."""
    text = lines(stream)
    for y, (line, after) in enumerate(pairwise(text)):
        if line.endswith("⏎") or line[-1:].isspace() or after[:1].isspace():
            continue
        assert cell_len(line) == stream._layout_width and " " not in line, (y, line, after)


def assert_first_lines(stream: TokenStream) -> None:
    """``_token_lines`` names the line of each token's first fragment (selection and scrolling use it)."""
    first: dict[int, int] = {}
    for y, line in enumerate(stream._lines):
        for pos, _ in line:
            first.setdefault(pos, y)
    for pos, y in first.items():
        assert stream._token_lines[pos] == y, (pos, stream._tokens[pos].text, y)


async def test_a_word_of_several_tokens_moves_to_the_next_line_whole() -> None:
    app = StreamApp(wrap=20, rows=8)
    async with app.run_test(size=(40, 10)) as pilot:
        stream = app.query_one(TokenStream)
        assert stream._layout_width == 20
        for index, text in STORY:
            stream.append(index, text, 0.5)
            await pilot.pause()
            assert rendered(stream)[:len(stream._lines)] == [line.rstrip() for line in lines(stream)]
        assert lines(stream) == STORY_LINES
        assert stream.text() == "".join(text for _, text in STORY)
        # a longer text, tokens split mid-word everywhere: every break is still between words
        words = ["the", "keeper", "of", "the", "light", "house", "climbed", "the", "stairs", "every", "night", "to",
                 "wind", "the", "great", "clock"]
        tokens = [piece for word in words for piece in (" " + word[:3], word[3:]) if piece]
        tokens[10:10] = [".\n", "\n"]
        stream.append_many([(len(STORY) + i, t, 0.9) for i, t in enumerate(tokens)])
        await pilot.pause()
        assert_word_boundaries(stream)
        assert_first_lines(stream)
        assert sum(line.endswith("⏎") for line in lines(stream)) == 2
        assert stream.text() == "".join(text for _, text in STORY) + "".join(tokens)
        # laid out token by token or all at once (a new width), the lines are the same
        incremental = [list(line) for line in stream._lines]
        stream._relayout()
        assert stream._lines == incremental


async def test_the_prompt_wraps_between_words() -> None:
    app = StreamApp(wrap=10, rows=8)
    async with app.run_test(size=(40, 10)) as pilot:
        stream = app.query_one(TokenStream)
        assert stream._layout_width == 10
        stream.set_prompt("Once upon a time there was")
        await pilot.pause()
        assert lines(stream) == ["Once upon", " a time", " there was"]
        assert stream.prompt() == "Once upon a time there was"
        assert stream.text() == ""
        assert rendered(stream)[:3] == ["Once upon", " a time", " there was"]


async def test_a_word_longer_than_a_line_is_the_only_cut() -> None:
    app = StreamApp(wrap=10, rows=8)
    async with app.run_test(size=(40, 10)) as pilot:
        stream = app.query_one(TokenStream)
        stream.set_prompt("ab ")
        stream.append(0, "x" * 30, 0.5)
        assert lines(stream) == ["ab ", "x" * 10, "x" * 10, "x" * 10]
        # wide characters: cut by cells, never past the edge
        stream.set_prompt("ab ")
        stream.append(0, "字" * 12, 0.5)
        stream.append(1, " end", 0.5)
        assert lines(stream) == ["ab ", "字" * 5, "字" * 5, "字" * 2 + " end"]
        # a long word arriving in tokens is cut the same way
        stream.set_prompt("ab ")
        stream.append_many([(i, "xxxxxx", 0.5) for i in range(5)])
        assert lines(stream) == ["ab ", "x" * 10, "x" * 10, "x" * 10]
        assert stream.text() == "x" * 30
        assert_first_lines(stream)
        await pilot.pause()


async def test_a_moved_word_is_selected_and_clicked_on_its_new_line() -> None:
    app = StreamApp(wrap=20, rows=3)
    async with app.run_test(size=(40, 10)) as pilot:
        stream = app.query_one(TokenStream)
        stream.append_many([(i, t, 0.5) for i, t in STORY[:6]])  # " th" still ends line 0
        await pilot.pause()
        rendered(stream)  # every line cached
        stream.append(6, "e", 0.5)  # the word " the" moves to line 1
        await pilot.pause()
        assert lines(stream) == [" The island was a", " the"]
        assert rendered(stream)[:2] == [" The island was a", " the"]  # the line the word left is repainted
        assert stream._token_lines[5:7] == [1, 1]
        # clicking the "e" (line 1, cell 3) and the " th" selects them
        await pilot.click(TokenStream, offset=(3, 1))
        await pilot.click(TokenStream, offset=(1, 1))
        await pilot.pause()
        assert app.selected == [6, 5]
        # a selected step that moved is scrolled to and drawn selected
        stream.append_many([(i, t, 0.5) for i, t in enumerate(["\n"] * 10, start=7)])
        stream.follow = False
        stream.select(5)
        await pilot.pause()
        assert stream.scroll_y <= 1 < stream.scroll_y + 3
        segments = list(stream.render_line(1 - int(stream.scroll_y)))
        selected = stream.get_component_rich_style("token-stream--selected")
        assert [s.text for s in segments if s.style and s.style.bgcolor == selected.bgcolor] == [" th"]


async def test_no_scrollbar_thumb_while_the_stream_fits() -> None:
    app = StreamApp(wrap=20)
    async with app.run_test(size=(30, 8)) as pilot:
        stream = app.query_one(TokenStream)
        await pilot.pause()
        view = stream.scrollable_content_region.height
        assert view == 8

        def no_thumb() -> bool:
            bar = stream.vertical_scrollbar
            return (stream.virtual_size.height <= view and stream.max_scroll_y == 0
                    and bar.window_virtual_size <= bar.window_size)

        assert no_thumb()  # empty
        stream.set_prompt("a short prompt")
        stream.append_many([(0, " and", 0.5), (1, "\n", 0.5), (2, "two lines", 0.5)])
        await pilot.pause()
        assert len(stream._lines) == 2 and no_thumb()
        # 200 tokens: scrollable, and the newest line stays in view while they stream in
        for i in range(3, 203):
            stream.append(i, f" w{i}", 0.5)
            if i % 25 == 0:
                await pilot.pause()
                assert stream.scroll_y <= len(stream._lines) - 1 < stream.scroll_y + view
        await pilot.pause()
        assert stream.max_scroll_y > 0 and not no_thumb()
        assert stream.scroll_y <= len(stream._lines) - 1 < stream.scroll_y + view
        stream.follow_latest()
        await pilot.pause()
        assert stream.scroll_y == len(stream._lines) - view
        assert rendered(stream)[-1] == lines(stream)[-1].rstrip()
        # back to a few lines: the thumb goes
        stream.truncate_to(3)
        await pilot.pause()
        assert no_thumb() and stream.scroll_y == 0
        # a taller view holds 12 lines, a shorter one scrolls again and still shows the newest line
        stream.append_many([(i, "\n", 0.5) for i in range(3, 13)])
        await pilot.pause()
        assert len(stream._lines) == 12 and not no_thumb()
        await pilot.resize_terminal(30, 20)
        await pilot.pause()
        view = stream.scrollable_content_region.height
        assert view == 20 and no_thumb() and stream.scroll_y == 0
        await pilot.resize_terminal(30, 6)
        await pilot.pause()
        view = stream.scrollable_content_region.height
        assert view == 6 and stream.max_scroll_y > 0
        assert stream.scroll_y <= len(stream._lines) - 1 < stream.scroll_y + view
