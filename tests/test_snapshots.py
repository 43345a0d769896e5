"""SVG snapshots of the main views on the deterministic fake engine (120×40 and 80×24).

Update after an intended UI change with: pytest tests/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tests.conftest import make_app, ready, until
from tui.app.widgets.token_stream import TokenStream

SIZES = [(120, 40), (80, 24)]


async def _finished_run(pilot) -> None:
    app = pilot.app
    await ready(pilot)
    app.query_one("#prompt", Input).cursor_blink = False
    app.query_one("#prompt", Input).value = "the lighthouse keeper"
    app.query_one("#prompt", Input).focus()
    await pilot.press("enter")
    await until(pilot, lambda: app.current.state_text.startswith("stopped"))
    await pilot.pause(0.1)


async def _step_mode(pilot) -> None:
    app = pilot.app
    await ready(pilot)
    app.query_one("#prompt", Input).cursor_blink = False
    app.query_one(TokenStream).focus()
    await pilot.press("s", "space")
    await until(pilot, lambda: app.current.pending is not None)
    for i in range(1, 8):
        await pilot.press("space")
        await until(pilot, lambda i=i: app.current.pending is not None and app.current.pending.index == i)
    await pilot.pause(0.1)


async def _selected_past_token(pilot) -> None:
    await _finished_run(pilot)
    pilot.app.query_one(TokenStream).focus()
    await pilot.press("left", "left", "left")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_after_a_run(snap_compare, size) -> None:
    assert snap_compare(make_app(max_tokens=60), terminal_size=size, run_before=_finished_run)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_step_mode_pending_token(snap_compare, size) -> None:
    assert snap_compare(make_app(max_tokens=60), terminal_size=size, run_before=_step_mode)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_selected_past_token(snap_compare, size) -> None:
    assert snap_compare(make_app(max_tokens=60), terminal_size=size, run_before=_selected_past_token)
