"""What watching a remote server costs the server, and what probe mode costs.

Starts llama.cpp's own llama-server on SmolLM2 (benchmarks/build_llama_server.sh builds it) on a loopback
port with one thread (the client gets the other core), then alternates, round after round:

* **bare**: a minimal streaming client (stdlib, reads the SSE lines and nothing else) on the same
  ``/completion`` request the dashboard sends (same prompt, n_predict, n_probs, sampling, ignore_eos);
* **dashboard**: the full dashboard (Textual headless, real rendering at 120×40, live graphs on) attached to
  the server, streaming that request through :mod:`tui.remote`.

The figure compared is the *server's* own generation rate (``timings.predicted_per_second`` from its last
chunk): what the dashboard costs the server. Then stream vs probe through :class:`RemoteController`
(client-side tokens/s; probe mode makes one request per token).

    python benchmarks/bench_remote.py [--tokens 128] [--rounds 3] [--server PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_remote_servers import llama_server_binary  # noqa: E402  the same lookup as the tests
from tui.engine import EngineSettings  # noqa: E402
from tui.engine.models import embedded_model_path  # noqa: E402
from tui.remote import connect  # noqa: E402
from tui.remote.entries import Remotes, RemoteSpec  # noqa: E402
from tui.remote.controller import RemoteController, preset_sampling  # noqa: E402
from tui.remote.source import RemoteEngine  # noqa: E402
from tui.sampling.presets import BUILTIN_PRESETS, load_presets  # noqa: E402

PROMPT = "Once upon a time"
PRESET = BUILTIN_PRESETS["balanced"]
SEED = 7


def start_server(binary: Path, model: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
    proc = subprocess.Popen([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
                             "-np", "1", "-t", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    proc.wait(timeout=15)
    raise SystemExit("llama-server did not start")


def request_body(n: int) -> dict:
    """The /completion body the dashboard's stream sends (tui.remote.llama_server.LlamaServerBackend.stream)."""
    s = preset_sampling(PRESET, SEED)
    body = {"prompt": PROMPT, "n_predict": n, "stream": True, "cache_prompt": True, "n_probs": 20, "ignore_eos": True}
    for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed"):
        if getattr(s, name) is not None:
            body[name] = getattr(s, name)
    return body


def bare(url: str, n: int) -> float:
    """A minimal streaming client; the server's own generation rate for the request."""
    req = urllib.request.Request(url + "/completion", json.dumps(request_body(n)).encode(),
                                 {"Content-Type": "application/json"})
    last = None
    with urllib.request.urlopen(req, timeout=300) as resp:
        for line in resp:
            if line.startswith(b"data: "):
                last = line
    timings = json.loads(last[6:])["timings"]
    return float(timings["predicted_per_second"])


async def dashboard(url: str, n: int) -> tuple[float, float]:
    """The dashboard attached to the server: (the server's rate, tokens/s as the dashboard saw them arrive)."""
    from tui.app.app import LlmTuiApp

    remotes = Remotes([RemoteSpec(url, None, "llama-server")])
    app = LlmTuiApp(load=lambda e, p: remotes.load(e), entry=remotes.entries()[0], remotes=remotes, model_label=url,
                    settings=EngineSettings(n_ctx=2048, seed=SEED), preset=PRESET, catalog=load_presets(None),
                    max_tokens=n, live_metrics=True, chat=False, prompt=PROMPT)
    async with app.run_test(size=(120, 40)):
        while app.engine is None:
            await asyncio.sleep(0.05)
        app.controller.ignore_eos = True
        result = await app.generate(PROMPT)
        server = result.summary["server"]
        return server["predicted_n"] * 1000.0 / server["predicted_ms"], result.summary["generation_tok_per_s"]


def client_rate(url: str, n: int, probe: bool) -> float:
    engine = RemoteEngine(connect(url))
    controller = RemoteController(engine, BUILTIN_PRESETS["greedy"], probe=probe, seed=SEED,
                                  emit=lambda event: None, max_tokens=n, ignore_eos=True)
    t0 = time.perf_counter()
    stats = controller.run(PROMPT)
    return stats.generated / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, choices=range(8, 1025), metavar="N")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="R")
    parser.add_argument("--server", type=Path, help="llama-server binary (default: as the tests find it)")
    args = parser.parse_args()
    binary = args.server or llama_server_binary()
    if binary is None:
        raise SystemExit("llama-server is not built: run benchmarks/build_llama_server.sh")
    proc, url = start_server(binary, embedded_model_path())
    try:
        bare(url, 16)  # warm up: the model's pages, the server's first request
        bares, boards, seen = [], [], []
        for r in range(args.rounds):
            bares.append(bare(url, args.tokens))
            rate, shown = asyncio.run(dashboard(url, args.tokens))
            boards.append(rate)
            seen.append(shown)
            print(f"round {r + 1}: server's generation rate — bare client {bares[-1]:.1f} tok/s, "
                  f"dashboard {boards[-1]:.1f} tok/s (dashboard saw {shown:.1f} tok/s arrive)")
        ratio = statistics.median(b / a for a, b in zip(bares, boards))
        print(f"server rate with the dashboard watching / with a bare client: median {ratio:.3f} "
              f"({(1 - ratio) * 100:+.1f}% cost; rounds {', '.join(f'{b / a:.3f}' for a, b in zip(bares, boards))})")
        streams, probes = [], []
        for _ in range(args.rounds):
            streams.append(client_rate(url, args.tokens // 2, probe=False))
            probes.append(client_rate(url, args.tokens // 2, probe=True))
        s, p = statistics.median(streams), statistics.median(probes)
        print(f"stream mode: {s:.1f} tok/s, probe mode: {p:.1f} tok/s (one request per token): probe/stream "
              f"{p / s:.3f}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
