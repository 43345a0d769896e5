"""``llmtui web`` in a real browser: Debian's headless Chromium, driven by playwright, on a real
``llmtui web`` server whose sessions run SmolLM2. What the page's terminal shows is read back from the
bytes its websocket received (a pyte screen), so the checks read text, not pixels; the screenshots are
kept for a person to look at.

The tests run in file order on one tab (one model load): the dashboard, a prompt, clicks, keys,
a link, a second tab refused, then the tab closes and its process must end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run
from tests.web_helpers import TerminalPage, WebProcess, browser_missing, launch_chromium, process_alive

pytestmark = pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "")

PROMPT = "The capital of France is"
SESSION = ("--max-tokens", "12", "--preset", "greedy")


class Web:
    def __init__(self, server: WebProcess, browser: Any, page: Any, term: TerminalPage, shots: Path) -> None:
        self.server, self.browser, self.page, self.term, self.shots = server, browser, page, term, shots


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("web-browser")
    server = WebProcess("--max-sessions", "1", before=SESSION, home=home)
    playwright = browser = None
    try:
        playwright = sync_playwright().start()
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        # a link's new tab must not reach the internet from a test: GitHub answers from here
        context.route("https://github.com/**", lambda route: route.fulfill(status=200, body="llama.cpp source"))
        page = context.new_page()
        term = TerminalPage(page)
        yield Web(server, browser, page, term, home)
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        assert server.stop() == 0


def greedy_answer(home: Path) -> str:
    """What SmolLM2 answers to PROMPT, greedy, in chat mode, outside the browser (`llmtui generate`)."""
    out = run("generate", PROMPT, *SESSION, "--json", home=home)
    assert out.returncode == 0, out.stderr
    return "".join(json.loads(line)["text"] for line in out.stdout.splitlines() if line.startswith('{"index"'))


def test_the_dashboard_streams_tokens_in_chromium(web: Web) -> None:
    page, term = web.page, web.term
    page.goto(web.server.url)
    term.wait_for("top-10 next tokens")
    term.wait_for("no step yet: type a prompt and press Enter", timeout=90)  # the model has loaded
    web.server.wait_session(1)
    before = page.screenshot(path=str(web.shots / "ready.png"))
    term.click_text("ask something")  # the prompt box: focused by a click, as a user would
    page.keyboard.type(PROMPT)
    term.wait_for(PROMPT)  # every key reached the app before Enter
    page.keyboard.press("Enter")
    screen = term.wait_for("stopped: max tokens reached", timeout=90)
    after = page.screenshot(path=str(web.shots / "generated.png"))
    row, _ = term.find("<|im_start|>assistant")
    shown = screen.splitlines()[row + 1].split("│")[1].strip()  # the tokens panel's part of the line
    assert shown and shown == greedy_answer(web.shots).strip()  # the same tokens as llama.cpp outside
    term.wait_for(re.compile(r"gen [1-9]\d* tok/s"), timeout=30)  # measured in the session, drawn in the page
    assert before != after  # and the page's pixels changed with it


def test_a_click_on_a_token_selects_its_step(web: Web) -> None:
    row, col = web.term.find("<|im_start|>assistant")
    x, y = web.term.cell_center(row + 1, col + 1)  # the answer's second character: its first token or so
    web.page.mouse.click(x, y)
    screen = web.term.wait_for(re.compile(r"step [0-2]\s"), timeout=30)
    assert "viewing step" in screen


def test_keys_switch_themes_and_open_screens(web: Web) -> None:
    page, term = web.page, web.term
    # out of the prompt by a click on the tokens panel's empty part (a lone ESC followed at once by a key
    # would read as alt+key)
    row, _ = term.find("<|im_start|>assistant")
    page.mouse.click(*term.cell_center(row + 6, 40))
    term.focus()
    colours = {cell.bg for cell in term.screen.buffer[term.screen.lines - 2].values()}
    page.keyboard.press("t")
    term.wait_for(re.compile(r"theme: [\w-]+"), timeout=30)
    page.wait_for_timeout(300)
    assert {cell.bg for cell in term.screen.buffer[term.screen.lines - 2].values()} != colours
    page.keyboard.press("?")
    term.wait_for("binding id", timeout=30)  # the help: every key, its action and its id
    page.keyboard.press("?")  # closes it too
    term.wait_gone("binding id", timeout=30)
    page.keyboard.press("L")
    term.wait_for("Learn — the llama.cpp study roadmap", timeout=30)


def test_a_link_opens_in_a_new_browser_tab(web: Web) -> None:
    """Learn's texts link the llama.cpp source they cite; in a browser the app's open_url becomes a new tab
    (in a terminal, the system's web browser)."""
    from tui.learn.links import LLAMA_CPP_COMMIT

    page, term = web.page, web.term
    term.wait_for("1.1 How is a model loaded into RAM?", timeout=30)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    term.wait_for("src/llama-batch.cpp", timeout=30)  # question 1.3 cites it, near the top
    with page.context.expect_page(timeout=30_000) as opened:
        term.click_text("src/llama-batch.cpp", offset=3)
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == f"https://github.com/ggml-org/llama.cpp/blob/{LLAMA_CPP_COMMIT}/src/llama-batch.cpp"
    tab.close()
    term.focus()
    page.keyboard.press("Escape")
    term.wait_gone("1.3 From logits to the next token", timeout=30)  # Learn closed: that ESC was read alone


def test_a_key_the_browser_keeps_has_one_that_reaches_the_app(web: Web) -> None:
    """ctrl+n (new session) never reaches a page in Chrome; in a browser session ctrl+l does the same, also
    with the prompt focused (a text input keeps ctrl+k and ctrl+u for itself)."""
    page, term = web.page, web.term
    assert "<|im_start|>assistant" in term.text()
    term.focus()
    page.keyboard.press("i")  # the prompt
    page.keyboard.press("Control+l")
    term.wait_for("new session: type a prompt", timeout=30)  # the answer and its steps are gone
    assert "<|im_start|>assistant" not in term.text()


SCREENS = [("m", "Models — loaded now"), ("e", "Presets — Enter on a preset"), ("k", "Tokenizer — type text"),
           ("Comma", "Settings — applying recreates"), ("Q", "Quantization lab —"), ("B", "Performance lab —"),
           ("R", "RAG lab —"), ("b", "Sessions in"), ("A", "A/B · two presets")]


def test_every_screen_a_key_opens_opens_and_closes_in_the_browser(web: Web) -> None:
    page, term = web.page, web.term
    row, _ = term.find("─ tokens ─")
    page.mouse.click(*term.cell_center(row + 5, 40))  # out of the prompt: the dashboard has the keys
    term.focus()
    for key, heading in SCREENS:
        page.keyboard.press(key)
        term.wait_for(heading, timeout=30)
        page.keyboard.press("Escape")
        term.wait_gone(heading, timeout=30)  # closed by a lone ESC, read as one before the next key


def test_a_second_tab_is_refused_with_a_page_saying_why(web: Web) -> None:
    second = web.page.context.new_page()
    try:
        second.goto(web.server.url)
        body = second.inner_text("body")
        assert "All sessions are in use" in body and "--max-sessions 1" in body
        second.screenshot(path=str(web.shots / "refused.png"))
    finally:
        second.close()
    assert len(web.server.session_pids()) == 1


def test_closing_the_tab_ends_its_session_process(web: Web) -> None:
    pid = web.server.wait_session(1)
    assert web.server.session_pids() == [pid] and process_alive(pid)
    web.page.close()
    assert web.server.wait_ended(pid) in ("quit", "SIGTERM")  # asked to quit; on a loaded machine, then told


def test_with_a_token_the_address_it_printed_opens_the_dashboard_and_nothing_else_does(
        web: Web, tmp_path: Path) -> None:
    server = WebProcess("--token", "browser-token-0123456789", before=SESSION, home=tmp_path)
    try:
        stranger = web.browser.new_context()
        page = stranger.new_page()
        response = page.goto(server.base)
        assert response is not None and response.status == 401 and "A token is needed" in page.inner_text("body")
        stranger.close()
        invited = web.browser.new_context(viewport={"width": 1000, "height": 700})
        page = invited.new_page()
        term = TerminalPage(page)
        page.goto(server.url)  # …/?token=…: a cookie, and the token leaves the address bar
        term.wait_for("top-10 next tokens")  # the websocket carried the cookie
        assert "token" not in page.url
        pid = server.wait_session(1)
        invited.close()
        assert server.wait_ended(pid) in ("quit", "SIGTERM")
    finally:
        assert server.stop() == 0
