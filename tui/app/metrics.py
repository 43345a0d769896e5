"""The dashboard's live metrics: RSS and KV bytes sampled for the memory graph, a throughput point per
batch of new steps, and the graphs redrawn at a bounded rate (only when something changed)."""

from __future__ import annotations

import time
from typing import Any

import psutil

from .widgets.graphs import MemoryGraph, ThroughputGraph

PLOT_HZ = 1.0
SAMPLE_HZ = 2  # RSS / KV samples for the memory graph


class LiveMetrics:
    """For one dashboard ``screen`` (off when its ``live_metrics`` is: snapshot tests, replays)."""

    def __init__(self, screen: Any) -> None:
        self.screen = screen
        self.dirty = False  # a graph has points it has not drawn yet
        self._t0 = time.perf_counter()
        self._proc = psutil.Process()

    def start(self) -> None:
        screen = self.screen
        screen.set_interval(1 / SAMPLE_HZ, self.sample_memory)
        screen.set_interval(1 / PLOT_HZ, self.replot)
        self.dirty = True
        screen.call_after_refresh(self.replot)  # empty graphs with their titles, at once

    def add_throughput(self) -> None:
        screen = self.screen
        tput = screen.model.throughput()
        if tput is None or not screen.live_metrics:
            return
        screen.panel(ThroughputGraph).add(time.perf_counter() - self._t0, *tput)
        self.dirty = True

    def sample_memory(self) -> None:
        screen = self.screen
        engine = screen.engine
        if engine is None or not screen.live_metrics:
            return
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        model = screen.model
        graph = screen.panel(MemoryGraph)
        if graph is not None:  # absent while the screen goes away
            layout = engine.kv_layout()  # None: a remote server's cache is not ours to measure
            graph.add(time.perf_counter() - self._t0, rss,
                      layout.used(model.n_prompt + len(model.steps)) if layout is not None else 0)
            self.dirty = True

    def replot(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        for graph in (self.screen.panel(MemoryGraph), self.screen.panel(ThroughputGraph)):
            if graph is not None and graph.display and graph.size.width > 10:
                graph.replot()
