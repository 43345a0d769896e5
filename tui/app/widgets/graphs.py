"""Memory and throughput over time (plotext), re-plotted at a slow, bounded rate."""

from __future__ import annotations

from collections import deque

from textual_plotext import PlotextPlot

MiB = 2**20


class TimeSeriesPlot(PlotextPlot):
    """A PlotextPlot that re-plots only when told its data changed."""

    DEFAULT_CSS = """
    TimeSeriesPlot { height: 1fr; min-height: 5; }
    """

    def __init__(self, title: str, *, id: str | None = None, maxlen: int = 240) -> None:
        super().__init__(id=id)
        self.title = title
        self.t: deque[float] = deque(maxlen=maxlen)

    def replot(self) -> None:
        raise NotImplementedError


class MemoryGraph(TimeSeriesPlot):
    """Process RSS and KV-cache bytes, with the model file size as a reference line."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("memory (MiB)", id=id)
        self.rss: deque[float] = deque(maxlen=self.t.maxlen)
        self.kv: deque[float] = deque(maxlen=self.t.maxlen)
        self.model_bytes = 0

    def add(self, t: float, rss: int, kv_bytes: int) -> None:
        self.t.append(t)
        self.rss.append(rss / MiB)
        self.kv.append(kv_bytes / MiB)

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        if self.t:
            xs = list(self.t)
            plt.plot(xs, list(self.rss), label="RSS", marker="braille")
            plt.plot(xs, list(self.kv), label="KV", marker="braille")
            if self.model_bytes:
                plt.hline(self.model_bytes / MiB)
        plt.xlabel("s")
        self.refresh()


class ThroughputGraph(TimeSeriesPlot):
    """Generation tok/s (rolling) and per-token latency; prompt tok/s in the title."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("tok/s", id=id)
        self.tps: deque[float] = deque(maxlen=self.t.maxlen)
        self.latency: deque[float] = deque(maxlen=self.t.maxlen)
        self.prompt_tps: float | None = 0.0  # None: not measured (a remote server that gave no prompt count)

    def add(self, t: float, tps: float, latency_ms: float) -> None:
        self.t.append(t)
        self.tps.append(tps)
        self.latency.append(latency_ms)

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        last = f"{self.tps[-1]:.0f} tok/s, {self.latency[-1]:.1f} ms/tok" if self.tps else "idle"
        prompt = "–" if self.prompt_tps is None else f"{self.prompt_tps:.0f} tok/s"
        plt.title(f"gen {last} · prompt {prompt}")
        if self.t:
            xs = list(self.t)
            plt.plot(xs, list(self.tps), label="tok/s", marker="braille")
            plt.plot(xs, list(self.latency), label="ms/tok", marker="braille", yside="right")
        plt.xlabel("s")
        self.refresh()
