"""screenshots/web-chromium.png: the dashboard served by ``llmtui web`` in Debian's headless Chromium,
after a real generation on the embedded SmolLM2 model.

    python screenshots/make_web_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.web_helpers

from tests.web_helpers import TerminalPage, WebProcess, browser_missing, launch_chromium  # noqa: E402

OUT = Path(__file__).with_name("web-chromium.png")
PROMPT = "Why is the sky blue?"


def main() -> None:
    if why := browser_missing():
        raise SystemExit(f"cannot run: {why}")
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="web-shot-"))
    server = WebProcess(before=("--max-tokens", "48", "--seed", "7"), home=home)
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            term = TerminalPage(page)
            page.goto(server.url)
            term.wait_for("no step yet: type a prompt and press Enter", timeout=90)
            term.focus()
            page.keyboard.type(PROMPT)
            page.keyboard.press("Enter")
            term.wait_for("stopped:", timeout=120)
            row, col = term.find("<|im_start|>assistant")
            page.mouse.click(*term.cell_center(row + 1, col + 6))  # a token clicked: its step in the panels
            term.wait_for("viewing step")
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT))
            browser.close()
    finally:
        server.stop()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
