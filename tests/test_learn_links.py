"""The llama.cpp source paths the Learn questions cite are links to those files on GitHub, at the commit
llama-cpp-python vendors, and a click on one opens it (Textual's Markdown calls ``app.open_url``)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.conftest import make_app, until
from tui.app.screens.learn import LearnScreen, question_markdown
from tui.learn import load_questions
from tui.learn.links import LLAMA_CPP_BLOB, LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON, SOURCE_PATH, link_sources

KV = "src/llama-kv-cache.cpp"


def link(path: str) -> str:
    return f"[{path}](https://github.com/ggml-org/llama.cpp/blob/{LLAMA_CPP_COMMIT}/{path})"


def hrefs(markdown: str) -> list[str]:
    """The links the Markdown widget's parser finds ("gfm-like", as in textual.widgets.Markdown)."""
    found = []
    for block in MarkdownIt("gfm-like").parse(markdown):
        for token in block.children or ():
            if token.type == "link_open":
                found.append(str(token.attrs["href"]))
    return found


# -- the transformation -------------------------------------------------------------------------------------------


def test_a_path_in_running_text_becomes_a_link_at_the_pinned_commit() -> None:
    assert link_sources(f"slides cells left ({KV}), when it can.") == f"slides cells left ({link(KV)}), when it can."
    text = "common/common.h and ggml/src/ggml-cpu/ggml-cpu.c; include/llama.h. tools/server/server-context.cpp"
    assert link_sources(text) == (f"{link('common/common.h')} and {link('ggml/src/ggml-cpu/ggml-cpu.c')}; "
                                  f"{link('include/llama.h')}. {link('tools/server/server-context.cpp')}")
    assert hrefs(link_sources(f"see {KV}")) == [LLAMA_CPP_BLOB + KV]


def test_code_spans_and_code_blocks_are_left_alone() -> None:
    for text in (f"checked in `{KV}`", f"``a ` {KV}``", f"```\n{KV}\n```", f"~~~~\nx\n{KV}\n~~~~"):
        assert link_sources(text) == text
    # a code span ends its protection where it ends
    assert link_sources(f"`x` {KV} `y`") == f"`x` {link(KV)} `y`"


def test_existing_links_are_untouched_and_nothing_is_linked_twice() -> None:
    for text in (f"[{KV}](https://example.org/{KV})", f"[the cache]({KV})", f"[{KV}][ref]",
                 f"<https://example.org/{KV}>", f"![{KV}](https://example.org/x.png)"):
        assert link_sources(text) == text
    once = link_sources(f"in {KV} and [{KV}](https://example.org)")
    assert once == f"in {link(KV)} and [{KV}](https://example.org)"
    assert link_sources(once) == once


@pytest.mark.parametrize("text", [
    "src/../etc/passwd", "src/x.exe", "src/./x.cpp", "src//x.cpp", "src/x.cpp.bak", "src/x.cpp/y",
    "vendor/llama.cpp/src/llama.cpp", "lib/llama.cpp", "src/x y.cpp", "src/x;rm.cpp", "src/.hidden.cpp",
    "https://github.com/ggml-org/llama.cpp/blob/master/src/llama.cpp", "src/", "src/.cpp",
])
def test_only_strict_source_paths_match(text: str) -> None:
    assert link_sources(text) == text
    assert SOURCE_PATH.search(text) is None


# -- the question texts -------------------------------------------------------------------------------------------


def test_every_question_renders_and_links_only_to_llama_cpp_at_the_pinned_commit() -> None:
    linked = set()
    for q in load_questions():
        markdown = question_markdown(q)
        found = hrefs(markdown)
        # every path cited outside code is a link, and every link is to such a path
        assert len(found) == markdown.count(LLAMA_CPP_BLOB), q.id
        for href in found:
            assert href.startswith(f"https://github.com/ggml-org/llama.cpp/blob/{LLAMA_CPP_COMMIT}/"), href
            path = href.removeprefix(LLAMA_CPP_BLOB)
            assert SOURCE_PATH.fullmatch(path), href
            assert f"[{path}]({href})" in markdown  # the visible text is the path
            linked.add(path)
    # the texts cite these (plain text, not in backticks); a typo in a path would drop one from the set
    assert {"src/llama-graph.cpp", KV, "common/common.h", "include/llama.h", "ggml/src/ggml-cpu/ggml-cpu.c",
            "src/llama-vocab.cpp", "tools/server/server-context.cpp"} <= linked
    assert len(linked) >= 15


def vendored_llama_cpp() -> Path | None:
    """llama.cpp's source as llama-cpp-python's sdist vendors it: $LLMTUI_LLAMA_CPP_SRC, or an sdist unpacked
    under the temporary folder (``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION``, then
    ``tar xzf``; benchmarks/build_llama_server.sh does that and removes it after the build)."""
    if env := os.environ.get("LLMTUI_LLAMA_CPP_SRC"):
        return Path(env)
    version = importlib.metadata.version("llama_cpp_python")
    trees = sorted(Path(tempfile.gettempdir()).glob(f"*/llama_cpp_python-{version}/vendor/llama.cpp"))
    return next((t for t in trees if (t / "include" / "llama.h").is_file()), None)


def test_the_pin_follows_the_installed_binding() -> None:
    """A new llama-cpp-python vendors another llama.cpp: update LLAMA_CPP_COMMIT with LLAMA_CPP_PYTHON."""
    assert importlib.metadata.version("llama_cpp_python") == LLAMA_CPP_PYTHON


def test_every_linked_file_exists_in_the_vendored_source() -> None:
    tree = vendored_llama_cpp()
    if tree is None:
        pytest.skip("no unpacked llama-cpp-python sdist (vendor/llama.cpp) on this machine; set "
                    "LLMTUI_LLAMA_CPP_SRC to one to check the linked paths")
    paths = {h.removeprefix(LLAMA_CPP_BLOB) for q in load_questions() for h in hrefs(question_markdown(q))}
    assert paths and sorted(p for p in paths if not (tree / p).is_file()) == []
    # the sdist ships its git metadata: the tree is the pinned commit
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert head.stdout.strip() == LLAMA_CPP_COMMIT


# -- a click ------------------------------------------------------------------------------------------------------


async def test_clicking_a_source_link_in_the_learn_screen_opens_its_url() -> None:
    app = make_app()
    opened: list[str] = []
    app.open_url = lambda url, *, new_tab=True: opened.append(url)  # what Textual's Markdown calls by default
    async with app.run_test(size=(140, 44)) as pilot:
        await until(pilot, lambda: app.controller is not None)
        app.action_learn("s2-shift-rope")
        await until(pilot, lambda: isinstance(app.screen, LearnScreen))
        await pilot.pause()
        url = LLAMA_CPP_BLOB + KV
        doc = app.screen.query_one("#doc").region

        def link_cell() -> tuple[int, int] | None:
            """Where the rendered link to ``url`` is on screen (its cells carry the click action)."""
            for y in range(doc.y, doc.bottom):
                for x in range(doc.x, doc.right):
                    if app.screen.get_style_at(x, y).meta.get("@click") == f"link({url!r})":
                        return x, y
            return None

        await until(pilot, lambda: link_cell() is not None)
        cell = link_cell()
        assert cell is not None
        assert await pilot.click(offset=cell)
        await until(pilot, lambda: opened == [url])
        assert isinstance(app.screen, LearnScreen)  # the screen stays; the browser opens the file
