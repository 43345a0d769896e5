"""Learn 4.3 (threads) and 4.5 (mmap) say only what their measurements support: conclusions computed from
the rows, a warning on a busy machine, a "cold" load that is checked to be cold (page-cache residency by
mincore), and a note when the page cache could not be dropped."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tui.engine import lab
from tui.engine.lab import BenchRow, LoadProbe, drop_page_cache
from tui.engine.residency import resident_fraction, rss_split
from tui.learn import find
from tui.learn.experiments import stage4
from tui.learn.experiments.stage4 import (
    DROP_REFUSED,
    MmapRow,
    busy_warning,
    load_average,
    measure_mmap,
    mmap_conclusion,
    threads_conclusion,
)
from tui.learn.host import Runner

MiB = 1 << 20


# -- 4.3 threads -------------------------------------------------------------------------------------


def _row(threads: int, pp: list[float], tg: list[float]) -> BenchRow:
    return BenchRow(threads=threads, batch=128, mmap=True, cache_type="f16", n_gpu_layers=0,
                    pp_tps=sum(pp) / len(pp), pp_std=0.0, tg_tps=sum(tg) / len(tg), tg_std=0.0,
                    load_cold_ms=1.0, load_warm_ms=1.0, rss_after_load=0, rss_after_run=0,
                    bandwidth_gbs=0.1 * sum(tg) / len(tg), pp_runs=pp, tg_runs=tg)


PP_SCALES = ([100.0, 101.0, 103.0], [180.0, 182.0, 185.0])


def test_threads_conclusion_follows_the_measured_curve() -> None:
    flat = threads_conclusion([_row(1, PP_SCALES[0], [50.0, 51.0, 52.0]), _row(2, PP_SCALES[1], [53.0, 53.5, 54.0])])
    assert "tg stopped scaling at 2 threads: ×1.05 from 1 to 2" in flat
    assert "pp still scaled with threads: ×1.80 from 1 to 2" in flat
    assert "memory bandwidth, not compute, limits it" in flat

    scaling = threads_conclusion([_row(1, PP_SCALES[0], [50.0, 51.0, 52.0]),
                                  _row(2, PP_SCALES[1], [88.0, 90.0, 91.0])])
    assert "tg still scaled with threads: ×1.76 from 1 to 2" in scaling
    assert "memory bandwidth, not compute" not in scaling and "stopped" not in scaling

    # a later step: scaled to 2, flat to 4
    later = threads_conclusion([_row(1, [10.0, 10.5, 11.0], [20.0, 20.5, 21.0]),
                                _row(2, [19.0, 19.5, 20.0], [38.0, 39.0, 39.5]),
                                _row(4, [38.0, 39.0, 40.0], [40.0, 40.5, 41.0])])
    assert "tg scaled ×1.90 from 1 to 2 threads, then stopped scaling at 4 threads: ×1.04 from 2 to 4" in later


def test_overlapping_runs_make_no_claim() -> None:
    noisy = threads_conclusion([_row(1, PP_SCALES[0], [40.0, 55.0, 70.0]), _row(2, PP_SCALES[1], [45.0, 60.0, 75.0])])
    assert "from 1 to 2 threads the runs overlap (40.0–70.0 vs 45.0–75.0 tok/s): no conclusion" in noisy
    assert "tg stopped" not in noisy and "tg still scaled" not in noisy
    assert "memory bandwidth" not in noisy


def test_slower_with_more_threads_is_said() -> None:
    worse = threads_conclusion([_row(1, [115.0, 120.0, 140.0], [55.0, 56.0, 58.0]),
                                _row(2, [42.0, 48.0, 50.0], [6.3, 11.3, 11.8])])
    assert "tg stopped scaling at 2 threads: ×0.20 from 1 to 2 (slower)" in worse
    assert "neither scaled" in worse and "says nothing about memory bandwidth" in worse


def test_busy_warning_when_the_load_average_exceeds_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 3.0, 2.0))
    warning = busy_warning(load_average(), load_average(), cores=2, own_threads=2)
    assert "the machine was busy (load average before 6.5, after 6.5, on 2 logical CPUs)" in warning
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert busy_warning(load_average(), load_average(), cores=2, own_threads=2) == ""
    # the benchmark's own threads count in the 1-minute average taken after it: not held against the machine
    assert busy_warning(0.3, 3.5, cores=2, own_threads=2) == ""
    assert busy_warning(0.3, 4.5, cores=2, own_threads=2) != ""


class _FakeHost:
    """Just what exp_threads / exp_mmap call (the dashboard's host is exercised in test_learn.py)."""

    quick = True

    def __init__(self, model: Path, cache_dir: Path) -> None:
        self.model = model
        self.cache_dir = cache_dir
        self.shown: dict[str, Any] = {}
        self.marks: list[str] = []

    async def ready(self) -> None: ...

    async def idle(self) -> None: ...

    def model_file(self) -> str:
        return str(self.model)

    async def in_thread(self, job: Any) -> Any:
        return job()

    async def show_results(self, title: str, columns: list[str], rows: list[list[str]], notes: str = "",
                           mark_row: int | None = None, widths: dict[int, int] | None = None) -> Any:
        self.shown = {"title": title, "columns": columns, "rows": rows, "notes": notes}
        return SimpleNamespace()

    def mark(self, target: Any, text: str, part: str | None = None) -> None:
        self.marks.append(text)


async def test_the_threads_experiment_says_what_its_rows_say(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def fake_bench(path: str, **kw: Any) -> list[BenchRow]:
        calls.append(kw)
        return [_row(1, PP_SCALES[0], [50.0, 51.0, 52.0]), _row(2, PP_SCALES[1], [53.0, 53.5, 54.0])]

    monkeypatch.setattr(lab, "bench", fake_bench)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    host = _FakeHost(tmp_path / "m.gguf", tmp_path)
    finding = await stage4.exp_threads(Runner(host, find("s4-threads"), 0), 0)  # type: ignore[arg-type]
    assert calls[0]["reps"] >= 3 and max(calls[0]["threads"]) <= os.cpu_count()
    assert finding.values["busy"] and finding.headline.startswith("⚠ busy machine — here tg stopped scaling")
    assert host.marks == [finding.headline]
    assert "the machine was busy" in host.shown["notes"] and "± 0" not in str(host.shown["rows"])
    assert host.shown["rows"][0][2] == "51.0 (50.0–52.0)"


# -- residency ----------------------------------------------------------------------------------------


def _write(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_a_file_just_written_and_dropped_is_not_resident(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.bin", 8 * MiB)
    if resident_fraction(path) is None:
        pytest.skip("mincore residency is not available here")
    assert resident_fraction(path) > 0.9  # just written: in the page cache (dirty)
    assert drop_page_cache(path)
    assert resident_fraction(path) < 0.1


def test_a_file_read_and_mapped_is_resident_and_survives_a_drop(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.bin", 8 * MiB)
    if resident_fraction(path) is None:
        pytest.skip("mincore residency is not available here")
    drop_page_cache(path)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert sum(mapped[i] for i in range(0, len(mapped), mmap.PAGESIZE)) >= 0  # touch every page
        assert resident_fraction(path) > 0.9
        # the kernel does not evict pages a process maps: why Learn 4.5 loads a private copy
        drop_page_cache(path)
        assert resident_fraction(path) > 0.9


def test_residency_unknown_is_none(tmp_path: Path) -> None:
    assert resident_fraction(tmp_path / "missing.bin") is None
    assert resident_fraction(_write(tmp_path / "empty.bin", 0)) is None


def test_rss_split_sees_anonymous_memory_grow() -> None:
    before = rss_split()
    if before is None:
        pytest.skip("/proc/self/status is not available here")
    block = bytearray(os.urandom(32 * MiB))  # written: resident, anonymous
    grown = rss_split().minus(before)  # type: ignore[union-attr]
    assert grown.anon > 24 * MiB and abs(grown.file) < 16 * MiB
    del block


# -- 4.5 mmap -----------------------------------------------------------------------------------------


def _probe(mmap_on: bool, ms: float, anon: int, file: int) -> LoadProbe:
    return LoadProbe(mmap_on, ms, anon, file)


def _mmap_rows(*, resident: float, dropped: bool = True) -> list[MmapRow]:
    return [MmapRow(True, dropped, resident, _probe(True, 200.0, 25 * MiB, 94 * MiB), 1.0,
                    _probe(True, 150.0, 25 * MiB, 94 * MiB)),
            MmapRow(False, dropped, resident, _probe(False, 540.0, 118 * MiB, 2 * MiB), 1.0,
                    _probe(False, 200.0, 118 * MiB, 2 * MiB))]


def test_mmap_conclusion_from_a_cold_measurement() -> None:
    said = mmap_conclusion(_mmap_rows(resident=0.003))
    assert said.startswith("cold (0.3% of the file cached before): mmap on 200 ms, off 540 ms — mmap ×2.7 faster")
    assert "warm: on 150 ms, off 200 ms — mmap ×1.3 faster" in said
    assert "+94.0 MiB file-backed and +25.0 MiB anonymous memory with mmap, +2.0 MiB and +118.0 MiB without" in said
    assert "was warm" not in said and DROP_REFUSED not in said


def test_mmap_conclusion_says_when_cold_was_warm() -> None:
    said = mmap_conclusion(_mmap_rows(resident=0.93))
    assert said.startswith("the cold measurement was warm: the page cache held 93% (mmap on), 93% (mmap off) of "
                           "the file before the 'cold' load")
    assert "cold (" not in said  # no cold comparison from a warm measurement
    assert DROP_REFUSED not in said


def test_mmap_conclusion_says_when_the_drop_failed() -> None:
    said = mmap_conclusion(_mmap_rows(resident=0.0, dropped=False))
    assert said.startswith(DROP_REFUSED)


def test_a_refused_drop_is_reported_by_the_measurement(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Forced failure: posix_fadvise refuses; the loads are stubbed (no model needed)."""
    def refuse(*_a: Any) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    monkeypatch.setattr(lab, "probe_load", lambda path, *, use_mmap, timeout: _probe(use_mmap, 10.0, 0, 0))
    model = _write(tmp_path / "model.gguf", 4 * MiB)
    rows = measure_mmap(str(model), tmp_path / "cache")
    assert [row.dropped for row in rows] == [False, False]
    said = mmap_conclusion(rows)
    assert said.startswith(DROP_REFUSED)
    if rows[0].resident_cold is not None:  # a copy just written, not dropped: still cached
        assert "the cold measurement was warm" in said
    assert list((tmp_path / "cache").iterdir()) == []  # the private copy is gone


def test_measure_mmap_loads_a_private_copy_cold(smollm2_path: Path, tmp_path: Path) -> None:
    """The one real measurement: four loads of SmolLM2, each in a short child process."""
    size = smollm2_path.stat().st_size
    rows = measure_mmap(str(smollm2_path), tmp_path / "cache")
    on, off = rows
    assert on.mmap and not off.mmap and on.dropped and off.dropped
    if on.resident_cold is not None:
        assert on.resident_cold < 0.1 and off.resident_cold < 0.1  # really cold
        assert on.resident_warm > 0.9  # the cold load brought the file in
    if on.cold.rss_file is not None:
        assert on.cold.rss_file > 0.7 * size  # mapped: file-backed pages (MAP_POPULATE)
        assert off.cold.rss_anon - on.cold.rss_anon > 0.7 * size  # read: copied into the process's own memory
    assert mmap_conclusion(rows).startswith("cold (")
    assert list((tmp_path / "cache").iterdir()) == []


def test_mmap_repeated_loads_whose_ranges_overlap_make_no_claim() -> None:
    import dataclasses

    on, off = _mmap_rows(resident=0.0)
    on = dataclasses.replace(on, cold_ms=(150.0, 200.0, 260.0), warm_ms=(140.0, 150.0, 160.0))
    off = dataclasses.replace(off, cold_ms=(250.0, 540.0, 600.0), warm_ms=(190.0, 200.0, 210.0))
    said = mmap_conclusion([on, off])
    assert "off 540 ms — no measurable difference (the runs overlap)" in said  # 150–260 vs 250–600
    assert "warm: on 150 ms, off 200 ms — mmap ×1.3 faster" in said and "medians of 3 loads each" in said
