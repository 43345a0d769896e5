"""The dashboard watched in a browser (llmtui web, Debian's headless Chromium) vs in a terminal (tmux):
the embedded model's generation rate in each, and the CPU every process spends per session.

    python benchmarks/bench_web.py [--tokens 128] [--rounds 3]

Each round runs the same greedy raw completion once in a browser tab and once in tmux, alternated, with
the same terminal size (155×42 cells: a 1400×900 page). The rate is what the session itself recorded
(its recording's footer: generated tokens / generation time), so it shows what watching costs the engine on
this machine's 2 cores; "watched" is from Enter until the finished recording. CPU is from /proc (psutil),
as % of one core over each phase: the session's llmtui process, the textual-serve server (browser) or
the tmux server (terminal), and Chromium's processes; "idle" is a ready dashboard with nothing running.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.web_helpers

from tests.web_helpers import (  # noqa: E402
    TerminalPage,
    WebProcess,
    browser_missing,
    launch_chromium,
    open_session,
    process_alive,
    read_until,
)

PROMPT = "Once upon a time, in a small village by the sea,"
COLUMNS, ROWS = 155, 42
IDLE_S = 3.0
READY = b"type a prompt and press Enter"  # the dashboard is up and its model loaded


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class Meter:
    """CPU % of one core per group of processes over a phase."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.start = {name: cpu_seconds(pids) for name, pids in groups.items()}
        self.t0 = time.monotonic()

    def percent(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {name: 100 * (cpu_seconds(pids) - self.start[name]) / wall for name, pids in self.groups.items()}


def memory_mib(pids: list[int]) -> dict[str, float]:
    """RSS, PSS (shared pages divided among the processes sharing them: the mapped model file is shared by
    every session) and USS (this process's own) of a session."""
    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        for key in total:
            total[key] += getattr(info, key, 0) / 2**20
    return total


def finished_recording(sessions: Path, before: set[Path], timeout: float = 300) -> dict:
    """The footer of the first recording that was not there before and has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in set(sessions.glob("*.jsonl")) - before:
            lines = path.read_text().splitlines()
            if lines and lines[-1].startswith('{"type":"footer"'):
                return json.loads(lines[-1])
        time.sleep(0.05)
    raise SystemExit(f"no finished recording in {sessions} after {timeout:.0f} s")


def chromium_pids() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]


def browser_round(server: WebProcess, browser: object, sessions: Path) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    term = TerminalPage(page)
    page.goto(server.url)
    term.wait_for(READY.decode(), timeout=90)
    pid = server.wait_session(len(server.session_pids()))
    groups = {"session": [pid], "server": [server.proc.pid], "chromium": chromium_pids()}
    idle = Meter(groups)
    page.wait_for_timeout(IDLE_S * 1000)
    idle_cpu = idle.percent()
    memory = memory_mib([pid])
    before = set(sessions.glob("*.jsonl"))
    term.focus()
    page.keyboard.type(PROMPT)
    run = Meter(groups)
    t0 = time.monotonic()
    page.keyboard.press("Enter")
    footer = finished_recording(sessions, before)
    watched = time.monotonic() - t0
    term.wait_for("stopped:")
    run_cpu = run.percent()
    page.close()
    server.wait_ended(pid)
    return {"footer": footer, "watched_s": watched, "idle": idle_cpu, "run": run_cpu, "memory": memory}


def in_own_loop(coro: Any) -> Any:
    """Run ``coro`` on an event loop of its own thread (playwright's sync API holds this thread's loop)."""
    import asyncio

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def socket_round(server: WebProcess, sessions: Path) -> dict:
    """A session watched through a bare websocket client that reads and drops the frames: what the server
    side costs when the browser draws on another machine."""
    import asyncio

    async def scenario() -> dict:
        client, ws = await open_session(server.base, width=COLUMNS, height=ROWS)
        try:
            await read_until(ws, READY)
            drain = asyncio.create_task(read_until(ws, b"\0never", timeout=600))  # keep reading, as a page does
            pid = server.wait_session(len(server.session_pids()))
            groups = {"session": [pid], "server": [server.proc.pid]}
            idle = Meter(groups)
            await asyncio.sleep(IDLE_S)
            idle_cpu = idle.percent()
            memory = memory_mib([pid])
            before = set(sessions.glob("*.jsonl"))
            await ws.send_str(json.dumps(["stdin", PROMPT]))
            run = Meter(groups)
            t0 = time.monotonic()
            await ws.send_str(json.dumps(["stdin", "\r"]))
            footer = await asyncio.to_thread(finished_recording, sessions, before)
            watched = time.monotonic() - t0
            run_cpu = run.percent()
            await ws.close()
            drain.cancel()
        finally:
            await client.close()
        server.wait_ended(pid)
        return {"footer": footer, "watched_s": watched, "idle": idle_cpu, "run": run_cpu, "memory": memory}

    return in_own_loop(scenario())


def two_sessions(server: WebProcess) -> list[dict[str, float]]:
    """Two tabs open at once (bare websocket clients): each session's memory, once the other has mapped the
    same model file (PSS shares those pages out, USS leaves them out)."""
    import asyncio

    async def scenario() -> list[dict[str, float]]:
        opened = [await open_session(server.base, width=COLUMNS, height=ROWS) for _ in range(2)]
        try:
            for _client, ws in opened:
                await read_until(ws, READY)
            pids = server.session_pids()[-2:]
            await asyncio.sleep(IDLE_S)
            memory = [memory_mib([pid]) for pid in pids]
        finally:
            for client, ws in opened:
                await ws.close()
                await client.close()
        for pid in pids:
            server.wait_ended(pid)
        return memory

    return in_own_loop(scenario())


def tmux_round(argv: list[str], home: Path, sessions: Path) -> dict:
    name = f"bench-web-{int(time.time() * 1000)}"
    env = f"LLMTUI_HOME={home}"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(COLUMNS), "-y", str(ROWS),
                    "env", env, *argv], check=True)
    try:
        pane = int(subprocess.run(["tmux", "display", "-p", "-t", name, "#{pane_pid}"], capture_output=True,
                                  text=True, check=True).stdout)
        tmux_server = int(subprocess.run(["tmux", "display", "-p", "-t", name, "#{pid}"], capture_output=True,
                                         text=True, check=True).stdout)

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout

        deadline = time.monotonic() + 60
        while READY.decode() not in screen():
            if time.monotonic() > deadline:
                raise SystemExit("the dashboard did not come up in tmux:\n" + screen())
            time.sleep(0.1)
        session_pids = [pane] + [c.pid for c in psutil.Process(pane).children(recursive=True)]
        groups = {"session": session_pids, "server": [tmux_server]}
        idle = Meter(groups)
        time.sleep(IDLE_S)
        idle_cpu = idle.percent()
        memory = memory_mib(session_pids)
        before = set(sessions.glob("*.jsonl"))
        subprocess.run(["tmux", "send-keys", "-t", name, "-l", PROMPT], check=True)
        run = Meter(groups)
        t0 = time.monotonic()
        subprocess.run(["tmux", "send-keys", "-t", name, "Enter"], check=True)
        footer = finished_recording(sessions, before)
        watched = time.monotonic() - t0
        run_cpu = run.percent()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)  # our own session, by its name
    deadline = time.monotonic() + 10
    while process_alive(pane) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"footer": footer, "watched_s": watched, "idle": idle_cpu, "run": run_cpu, "memory": memory}


def summary(rows: list[dict]) -> dict:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    out = {"tok_s": med([r["footer"]["summary"]["generation_tok_per_s"] for r in rows]),
           "tokens": med([r["footer"]["summary"]["generated_tokens"] for r in rows]),
           "watched_s": med([r["watched_s"] for r in rows])}
    for phase in ("idle", "run", "memory"):
        for name in rows[0][phase]:
            out[f"{phase}_{name}"] = med([r[phase][name] for r in rows])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=128, choices=range(8, 1025), metavar="N")
    ap.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="R")
    args = ap.parse_args()
    if why := browser_missing():
        raise SystemExit(f"cannot run: {why}")
    if shutil.which("tmux") is None:
        raise SystemExit("cannot run: tmux is not installed")
    from playwright.sync_api import sync_playwright

    options = ["--raw", "--preset", "greedy", "--max-tokens", str(args.tokens), "--record", "--threads", "2"]
    home = Path(tempfile.mkdtemp(prefix="bench-web-"))
    sessions = home / "data" / "sessions"
    argv = [sys.executable, "-m", "tui.cli", *options]
    server = WebProcess("--max-sessions", "2", before=tuple(options), home=home)
    results: dict[str, list[dict]] = {"browser": [], "socket": [], "tmux": []}
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for r in range(args.rounds):
                order = ("browser", "socket", "tmux")
                for kind in order if r % 2 == 0 else order[::-1]:  # alternated: no drift bias
                    row = (browser_round(server, browser, sessions) if kind == "browser"
                           else socket_round(server, sessions) if kind == "socket"
                           else tmux_round(argv, home, sessions))
                    results[kind].append(row)
                    s = row["footer"]["summary"]
                    print(f"round {r + 1} {kind:7}: {s['generated_tokens']} tokens at {s['generation_tok_per_s']:.1f} "
                          f"tok/s, watched {row['watched_s']:.2f} s; CPU % run "
                          + ", ".join(f"{k} {v:.0f}" for k, v in row["run"].items())
                          + " · idle " + ", ".join(f"{k} {v:.1f}" for k, v in row["idle"].items()), flush=True)
            browser.close()
        both = two_sessions(server)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    b, w, t = summary(results["browser"]), summary(results["socket"]), summary(results["tmux"])
    print(f"\nmedians over {args.rounds} round(s), SmolLM2-135M Q4_1, greedy raw completion, {args.tokens} tokens max, "
          f"{psutil.cpu_count()} CPUs")
    print("browser: Chromium on this machine; socket: llmtui web with a client that only reads (a browser "
          "elsewhere); tmux: a terminal")
    print(f"{'':30}{'browser':>10}{'socket':>10}{'tmux':>10}")
    print(f"{'generation tok/s':30}{b['tok_s']:10.1f}{w['tok_s']:10.1f}{t['tok_s']:10.1f}   vs tmux: browser "
          f"{b['tok_s'] / t['tok_s']:.3f}, socket {w['tok_s'] / t['tok_s']:.3f}")
    print(f"{'watched: Enter → done, s':30}{b['watched_s']:10.2f}{w['watched_s']:10.2f}{t['watched_s']:10.2f}")
    for phase in ("run", "idle"):
        for name in ("session", "server", "chromium"):
            key = f"{phase}_{name}"
            label = f"CPU % {phase}: {name}" + (" (tmux's)" if name == "server" else "")
            print(f"{label:30}" + "".join(f"{x.get(key, float('nan')):10.1f}" for x in (b, w, t)))
    for name in ("rss", "pss", "uss"):
        print(f"{'session memory, MiB: ' + name.upper():30}"
              + "".join(f"{x[f'memory_{name}']:10.1f}" for x in (b, w, t)))
    print("two sessions open at once, MiB each: " + "; ".join(
        ", ".join(f"{k.upper()} {v:.1f}" for k, v in m.items()) for m in both))


if __name__ == "__main__":
    main()
