"""The fleet view: every remote server in one table, polled on a timer; Enter attaches the dashboard to one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, get_current_worker

from ...remote.backend import MetricsSample
from ...remote.metrics import rate
from ...safe_text import visible
from ...units import human_count
from ..widgets.safe import plain

# health last: an error line is long, and the figures of the other rows must stay in view
COLUMNS = (("server", "url"), ("backend", "backend"), ("model", "model"), ("running", "running"),
           ("waiting", "waiting"), ("gen tok/s", "tps"), ("KV", "kv"), ("prompt cache hits", "hits"),
           ("health", "health"))
NOT_EXPOSED = Text("not exposed", style="dim")
NO_VALUE = Text("—", style="dim")  # a server that did not answer, or a rate that needs one more poll


@dataclass
class FleetPolled(Message):
    """One poll of every server (an immutable snapshot: the worker never touches a widget)."""

    bubble = False  # for this screen only

    samples: tuple[MetricsSample, ...]
    wall: float  # time.time() when the poll finished


@dataclass
class FleetPollFailed(Message):
    bubble = False

    error: str


def _one_line(text: str, limit: int = 120) -> str:
    line = " ".join(visible(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _count(value: float | None) -> Text | str:
    return NOT_EXPOSED if value is None else f"{value:g}"


def _cells(sample: MetricsSample, tps: float | None) -> dict[str, Any]:
    """The row of one server, by column key."""
    # a model id may be a file's whole path (llama-cpp-python's server names models so): its file name then;
    # a hub id ("Qwen/Qwen2.5-7B-Instruct") stays whole
    model = sample.model
    if model.startswith("/") or model.lower().endswith(".gguf"):
        model = model.rstrip("/").rsplit("/", 1)[-1]
    model = model if len(model) <= 40 else model[:39] + "…"
    cells: dict[str, Any] = {"url": plain(sample.url), "backend": plain(sample.backend), "model": plain(model)}
    if not sample.healthy:
        cells["health"] = plain(_one_line(sample.error or "no answer"))
        cells.update(dict.fromkeys(("running", "waiting", "tps", "kv", "hits"), NO_VALUE))
        return cells
    cells["health"] = "ok"
    cells["running"] = _count(sample.running)
    cells["waiting"] = _count(sample.waiting)
    if sample.generated_total is None:
        cells["tps"] = NOT_EXPOSED
    else:
        cells["tps"] = NO_VALUE if tps is None else f"{tps:.1f}"
    cells["kv"] = NOT_EXPOSED if sample.kv_usage is None else f"{sample.kv_usage:.0%}"
    cells["hits"] = NOT_EXPOSED if sample.cache_hit_total is None else human_count(sample.cache_hit_total)
    return cells


class FleetScreen(Screen[int | None]):
    """Dismisses with the index of the chosen server in ``poll()``'s list (Enter), or None (Esc).

    ``poll`` is called from a worker thread every ``interval`` seconds and returns one
    :class:`MetricsSample` per server; a server that fails is a sample with ``healthy=False`` and its error,
    and the other rows keep updating."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="fleet.close"),
        Binding("r", "poll_now", "Poll now", id="fleet.poll"),
    ]
    DEFAULT_CSS = """
    FleetScreen { background: $surface; }
    FleetScreen > Vertical { border: round $primary; padding: 0 1; }
    FleetScreen #fleet-header { height: auto; color: $text-muted; }
    FleetScreen DataTable { height: 1fr; }
    FleetScreen #fleet-detail { height: auto; max-height: 12; color: $text-muted; }
    FleetScreen #fleet-detail.-error { color: $error; }
    """

    def __init__(self, poll: Callable[[], list[MetricsSample]], interval: float = 2.0) -> None:
        super().__init__()
        self.poll = poll
        self.interval = max(0.2, float(interval))
        self.samples: tuple[MetricsSample, ...] = ()
        self.rates: dict[str, float | None] = {}  # tokens/s by URL, from the last two polls
        self._previous: dict[str, MetricsSample] = {}  # each URL's last healthy sample
        self._polled_at: float | None = None
        self._poll_error = ""
        self._worker: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self._header(), id="fleet-header")
            table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=True, id="fleet")
            for label, key in COLUMNS:
                table.add_column(label, key=key)
            yield table
            yield Static("", id="fleet-detail")  # the highlighted server's whole error line
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_poll_now()
        self.set_interval(self.interval, self.action_poll_now)

    def action_poll_now(self) -> None:
        # one poll at a time: a server that takes its whole timeout holds the next poll back rather than
        # piling threads up behind it
        if self._worker is not None and not self._worker.is_finished:
            return
        self._worker = self._poll()

    @work(thread=True, exclusive=True, group="fleet", exit_on_error=False)
    def _poll(self) -> None:
        try:
            samples = tuple(s for s in self.poll() if isinstance(s, MetricsSample))
        except Exception as exc:  # noqa: BLE001 - poll should not raise; if it does, say so and keep the old rows
            self.post_message(FleetPollFailed(_one_line(str(exc) or type(exc).__name__)))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(FleetPolled(samples, time.time()))

    def on_fleet_polled(self, message: FleetPolled) -> None:
        for sample in message.samples:
            if sample.healthy:
                self.rates[sample.url] = rate(self._previous.get(sample.url), sample)
                self._previous[sample.url] = sample
            else:  # the next rate is taken between two answers, never across a gap
                self.rates[sample.url] = None
                self._previous.pop(sample.url, None)
        self.samples = message.samples
        self._polled_at = message.wall
        self._poll_error = ""
        self._fill()

    def on_fleet_poll_failed(self, message: FleetPollFailed) -> None:
        self._poll_error = message.error
        self.query_one("#fleet-header", Static).update(self._header())

    def _header(self) -> Text:
        text = Text.assemble(("Fleet", "bold"))
        n = len(self.samples)
        if self._polled_at is None:
            text.append(" — polling…")
        else:
            when = time.strftime("%H:%M:%S", time.localtime(self._polled_at))
            text.append(f" — {n} server{'' if n == 1 else 's'}, polled at {when}")
        text.append(f", every {self.interval:g} s · Enter attaches the dashboard, r polls now, Esc closes")
        if self._poll_error:
            text.append(f"\npoll failed: {self._poll_error}", style="bold")
        return text

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        rows = [_cells(s, self.rates.get(s.url)) for s in self.samples]
        with self.app.batch_update():
            if table.row_count == len(rows):  # same servers: change cells in place so the cursor stays
                for i, cells in enumerate(rows):
                    for _, key in COLUMNS:
                        table.update_cell(str(i), key, cells[key])
            else:
                cursor = table.cursor_row
                table.clear()
                for i, cells in enumerate(rows):
                    table.add_row(*(cells[key] for _, key in COLUMNS), key=str(i))
                if rows:
                    table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
            self.query_one("#fleet-header", Static).update(self._header())
            self._show_detail(table.cursor_row)

    @on(DataTable.RowHighlighted, "#fleet")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    def _show_detail(self, row: int) -> None:
        """Under the table: the highlighted server's error, or what it serves now (its request slots)."""
        chosen = self.samples[row] if 0 <= row < len(self.samples) else None
        detail = self.query_one("#fleet-detail", Static)
        if chosen is None:
            detail.update("")
        elif not chosen.healthy:
            detail.set_class(True, "-error")
            detail.update(plain(_one_line(chosen.error or "no answer", 400)))
        else:
            detail.set_class(False, "-error")
            lines = (["its requests (slots):", *(_one_line(r, 200) for r in chosen.requests)] if chosen.requests
                     else ["its requests: not exposed by this server (only llama-server lists its slots)"])
            detail.update(Text("\n").join(plain(line) for line in lines))

    @on(DataTable.RowSelected, "#fleet")
    def _choose(self, event: DataTable.RowSelected) -> None:
        self.dismiss(int(event.row_key.value))
