"""Quantization and performance labs (what llama-quantize, llama-perplexity --kl-divergence and
llama-bench answer, as library calls the CLI and the dashboard share)."""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..units import human_bytes
from .errors import EngineError
from .settings import EngineSettings

_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


# -- quantize -------------------------------------------------------------------------------


@dataclass(slots=True)
class QuantizeResult:
    source: str
    output: str
    qtype: str
    seconds: float
    file_size: int
    bits_per_weight: float
    by_type: dict[str, dict[str, int]]
    fallback: tuple[int, int] | None  # (tensors that fell back, total) when llama.cpp said so
    requantized: bool  # the source was already quantized
    log_tail: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpu_offload_available() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (False without llama.cpp behind the app)."""
    try:
        from .binding import supports_gpu_offload

        return supports_gpu_offload()
    except Exception:  # a fake engine: no llama.cpp to ask
        return False


LAB_TYPES = ("q8_0", "q5_1", "q4_0", "q2_k")  # the quantization lab's variants (the screen's and the headless one's)


def default_output(source: Path, qtype: str, models_dir: Path) -> Path:
    """``<models_dir>/<source's stem without its quant>.<TYPE>.gguf``."""
    stem = re.sub(r"[.-](Q\d\w*|F16|BF16|F32|q\d\w*|f16)$", "", source.stem)
    return models_dir / f"{stem}.{qtype.upper()}.gguf"


def variant_type(path: str | os.PathLike[str]) -> str:
    """A variant's quantization type from its :func:`default_output` name (``….Q8_0.gguf`` → ``Q8_0``)."""
    return Path(path).stem.split(".")[-1]


def quantize_model(source: str | os.PathLike[str], qtype: str, out: str | os.PathLike[str] | None = None, *,
                   models_dir: Path | None = None, force: bool = False, threads: int = 0) -> QuantizeResult:
    """Quantize (or re-quantize) ``source`` to ``out`` (or its :func:`default_output` in ``models_dir``);
    clear errors for every bad input."""
    from .gguf_header import read_header
    from .quantize import QUANT_TYPES, quantize

    key = qtype.lower()
    if key not in QUANT_TYPES:
        raise EngineError(f"unsupported --type {qtype!r}: one of {', '.join(QUANT_TYPES)}")
    src = Path(source)
    header = read_header(src)  # missing / not GGUF / truncated → ModelFileError
    if out is None and models_dir is None:
        raise EngineError("quantize: give an output file or a models directory")
    target = Path(out) if out else default_output(src, key, models_dir)
    if target.exists() and not force:
        raise EngineError(f"{target}: already exists (use --force to overwrite)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"{target.parent}: cannot create the output directory: {exc.strerror or exc}") from None
    if not os.access(target.parent, os.W_OK):
        raise EngineError(f"{target.parent}: the output directory is not writable")
    t0 = time.perf_counter()
    log = quantize(src, target, key, threads=threads)
    seconds = time.perf_counter() - t0
    written = read_header(target)
    fallback = None
    for line in log:
        m = _FALLBACK.search(line)
        if m:
            fallback = (int(m.group(1)), int(m.group(2)))
    src_type = header.get("general.file_type")
    return QuantizeResult(
        source=str(src), output=str(target), qtype=key, seconds=seconds, file_size=target.stat().st_size,
        bits_per_weight=written.bits_per_weight, by_type=written.by_type(), fallback=fallback,
        requantized=src_type not in (0, 1, None), log_tail=[ln for ln in log if "size" in ln][-3:],
    )


# -- compare (perplexity, KL divergence, top-1 agreement) ---------------------------------------


def builtin_text() -> str:
    return importlib.resources.files("tui.engine").joinpath("compare_text.txt").read_text(encoding="utf-8")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


@dataclass(slots=True)
class ModelScore:
    name: str
    path: str
    file_size: int
    bits_per_weight: float
    load_ms: float
    prompt_tps: float
    gen_tps: float
    perplexity: float
    kl_mean: float
    kl_p99: float
    top1_agreement: float
    per_token_kl: list[float] = field(default_factory=list)
    top1: list[int] = field(default_factory=list)
    topk: list[list[tuple[int, float]]] = field(default_factory=list)  # per position: best 5 (id, p)

    def as_dict(self, *, per_token: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not per_token:
            for key in ("per_token_kl", "top1", "topk"):
                d.pop(key)
        return d


@dataclass(slots=True)
class Comparison:
    reference: str
    tokens: list[int]
    scores: list[ModelScore]
    ref_top1: list[int] = field(default_factory=list)
    pieces: dict[int, str] = field(default_factory=dict)  # token id -> text, for the per-token view

    def as_dict(self, *, per_token: bool = False) -> dict[str, Any]:
        return {"reference": self.reference, "n_tokens": len(self.tokens),
                "models": [s.as_dict(per_token=per_token) for s in self.scores]}


def compare_models(paths: Sequence[str], text: str | None = None, *, settings: EngineSettings | None = None,
                   max_tokens: int = 384, gen_tokens: int = 32,
                   on_progress: Callable[[str], None] | None = None) -> Comparison:
    """The first path is the reference. Same tokenizer required (quantized variants of one model)."""
    from .gguf_header import read_header
    from .llama import LlamaEngine

    if len(paths) < 1:
        raise EngineError("give a reference model and at least one other")
    text = text or builtin_text()
    settings = settings or EngineSettings(n_ctx=1024)
    ref_logp: np.ndarray | None = None
    tokens: list[int] = []
    vocab = None
    scores: list[ModelScore] = []
    ref_top1: list[int] = []
    pieces: dict[int, str] = {}
    for path in paths:
        if on_progress:
            on_progress(f"evaluating {Path(path).name}")
        with LlamaEngine(path, settings) as eng:
            if not tokens:
                tokens = eng.tokenize(text)[:max_tokens]
                if len(tokens) < 16:
                    raise EngineError("the comparison text is too short (needs at least 16 tokens)")
                vocab = eng.n_vocab
            elif eng.n_vocab != vocab or eng.tokenize(text)[:max_tokens] != tokens:
                raise EngineError(f"{path}: a different tokenizer than the reference: compare variants of one model")
            t0 = time.perf_counter()
            logits = eng.evaluate_all(tokens)
            pp_ms = (time.perf_counter() - t0) * 1000.0
            logp = log_softmax(logits[:-1])  # predictions for tokens[1:]
            nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]
            top1 = logp.argmax(axis=1)
            if ref_logp is None:
                ref_logp, ref_top1 = logp, top1.tolist()
                kl = np.zeros(len(tokens) - 1)
            else:
                p_ref = np.exp(ref_logp)
                kl = (p_ref * (ref_logp - logp)).sum(axis=1)
            agreement = float((top1 == np.asarray(ref_top1)).mean())
            best = np.argpartition(-logp, 5, axis=1)[:, :5]
            topk = []
            for row, ids in zip(logp, best):
                ids = ids[np.argsort(-row[ids])]
                topk.append([(int(t), float(np.exp(row[t]))) for t in ids])
                for t in ids:
                    if int(t) not in pieces:
                        pieces[int(t)] = eng.piece(int(t)).decode("utf-8", "replace")
            for t in tokens:
                if t not in pieces:
                    pieces[t] = eng.piece(t).decode("utf-8", "replace")
            gen_tps = _gen_speed(eng, tokens[:8], gen_tokens)
            scores.append(ModelScore(
                name=eng.info.name,  # the catalog's name of the variant's file
                path=str(path), file_size=eng.info.file_size,
                bits_per_weight=read_header(path).bits_per_weight, load_ms=eng.load_ms,
                prompt_tps=len(tokens) * 1000.0 / pp_ms, gen_tps=gen_tps,
                perplexity=float(math.exp(nll.mean())), kl_mean=float(kl.mean()),
                kl_p99=float(np.percentile(kl, 99)), top1_agreement=agreement,
                per_token_kl=[float(x) for x in kl], top1=top1.tolist(), topk=topk,
            ))
    return Comparison(reference=str(paths[0]), tokens=tokens, scores=scores, ref_top1=ref_top1, pieces=pieces)


@dataclass(frozen=True, slots=True)
class TextScore:
    """How well a model predicts a text, in a unit that does not depend on its tokenizer."""

    name: str
    n_params: int
    bits_per_weight: float
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the tokens it predicted
    bits_per_byte: float  # Σ −log2 p(token) / bytes: lower = the text surprised it less


def bits_per_byte(path: str, text: str, *, settings: EngineSettings | None = None) -> TextScore:
    """``text``'s cross-entropy under the model at ``path``, per UTF-8 byte: comparable across models with
    different vocabularies (per-token perplexity is not)."""
    from .gguf_header import read_header
    from .llama import LlamaEngine

    with LlamaEngine(path, settings or EngineSettings(n_ctx=1024)) as eng:
        tokens = eng.tokenize(text)
        if len(tokens) + 1 > eng.n_ctx:
            raise EngineError(f"the text ({len(tokens)} tokens) does not fit n_ctx {eng.n_ctx}")
        logp = log_softmax(eng.evaluate_all(tokens)[:-1])
        nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]
        n_bytes = sum(len(eng.piece(t)) for t in tokens[1:])
        header = read_header(path)
        return TextScore(eng.info.name, header.n_params, header.bits_per_weight, len(tokens), n_bytes,
                         float(nll.sum() / math.log(2) / max(1, n_bytes)))


def _gen_speed(eng: Any, prompt: list[int], n: int) -> float:
    eng.clear()
    eng.decode(prompt)
    t0 = time.perf_counter()
    for _ in range(n):
        tok = int(np.argmax(eng.logits()))
        eng.decode([tok])
    return n / (time.perf_counter() - t0)


def compare_table(result: Any) -> str:
    lines = [f"reference: {Path(result.reference).name} · {len(result.tokens)} tokens",
             f"{'model':<36} {'size':>9} {'bpw':>5} {'load ms':>8} {'pp t/s':>7} {'tg t/s':>7} {'PPL':>8} "
             f"{'KL mean':>8} {'KL p99':>8} {'top-1':>6}"]
    for s in result.scores:
        lines.append(f"{s.name[:36]:<36} {human_bytes(s.file_size):>9} {s.bits_per_weight:>5.2f} "
                     f"{s.load_ms:>8.0f} {s.prompt_tps:>7.0f} {s.gen_tps:>7.1f} {s.perplexity:>8.3f} "
                     f"{s.kl_mean:>8.4f} {s.kl_p99:>8.4f} {s.top1_agreement:>6.1%}")
    return "\n".join(lines)


def compare_markdown(result: Any) -> str:
    lines = [f"Reference: `{Path(result.reference).name}`, {len(result.tokens)} tokens of the built-in text.", "",
             "| model | size | bits/weight | perplexity | KL mean | KL p99 | top-1 agreement | tg tok/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in result.scores:
        name = s.name.replace("|", "\\|")  # a file name may hold the table's separator
        lines.append(f"| {name} | {human_bytes(s.file_size)} | {s.bits_per_weight:.2f} | "
                     f"{s.perplexity:.3f} | {s.kl_mean:.4f} | {s.kl_p99:.4f} | {s.top1_agreement:.1%} | {s.gen_tps:.1f} |")
    return "\n".join(lines)


# -- bench (llama-bench's pp / tg, load times) ---------------------------------------------------


@dataclass(slots=True)
class BenchRow:
    threads: int
    batch: int
    mmap: bool
    cache_type: str
    n_gpu_layers: int
    pp_tps: float  # mean over the repetitions (llama-bench's avg ± stddev)
    pp_std: float
    tg_tps: float
    tg_std: float
    load_cold_ms: float
    load_warm_ms: float
    rss_after_load: int
    rss_after_run: int
    bandwidth_gbs: float  # model bytes read per generated token × tok/s
    pp_runs: list[float] = field(default_factory=list)  # tok/s of each repetition
    tg_runs: list[float] = field(default_factory=list)
    # the page-cache fraction of the file just before the "cold" load (None: not measurable here); a file
    # some process keeps mapped cannot be dropped, so its "cold" load is warm
    resident_before_cold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def drop_page_cache(path: str | os.PathLike[str]) -> bool:
    """Ask the kernel to evict the file from the page cache (fsync, then posix_fadvise DONTNEED).

    True when the kernel accepted the request, which is not the same as "the file is now cold": dirty pages
    are written back first (hence the fsync), and pages that any process has mapped are skipped. Check with
    :func:`~tui.engine.residency.resident_fraction`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            os.fsync(fd)  # a file just written has dirty pages, which DONTNEED does not drop
        except OSError:
            pass  # some filesystems refuse fsync on a read-only descriptor: the advice may still work
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except (OSError, AttributeError):  # AttributeError: no posix_fadvise on this OS
        return False
    finally:
        os.close(fd)


def bench(path: str, *, threads: Sequence[int] = (0,), batches: Sequence[int] = (512,),
          mmaps: Sequence[bool] = (True,), cache_types: Sequence[str] = ("f16",), ngls: Sequence[int] = (0,),
          pp: int = 512, tg: int = 128, reps: int = 3,
          on_progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """One row per combination: pp and tg tok/s over ``reps`` repetitions (each kept in ``pp_runs`` /
    ``tg_runs``), cold and warm load times (and how cold "cold" was), RSS after load and after the run."""
    import psutil

    from .llama import LlamaEngine
    from .residency import resident_fraction

    if reps < 1:
        raise EngineError(f"reps: {reps} (at least 1)")
    proc = psutil.Process()
    size = Path(path).stat().st_size
    rows = []
    for th in threads:
        for nb in batches:
            for mm in mmaps:
                for ct in cache_types:
                    for ngl in ngls:
                        settings = EngineSettings(n_ctx=max(1024, pp + tg + 16), n_threads=th, n_batch=nb,
                                                  n_ubatch=nb, use_mmap=mm, type_k=ct, type_v=ct, n_gpu_layers=ngl)
                        if on_progress:
                            on_progress(f"threads {settings.threads}, batch {nb}, mmap {'on' if mm else 'off'}, "
                                        f"cache {ct}, ngl {ngl}")
                        drop_page_cache(path)
                        resident = resident_fraction(path)
                        t0 = time.perf_counter()
                        eng = LlamaEngine(path, settings)
                        cold = (time.perf_counter() - t0) * 1000.0
                        rss_load = proc.memory_info().rss
                        try:
                            pps, tgs = [], []
                            tokens = [int(t) % eng.n_vocab for t in range(100, 100 + pp)]
                            for _ in range(reps):
                                eng.clear()
                                t1 = time.perf_counter()
                                eng.decode(tokens)
                                pps.append(pp / (time.perf_counter() - t1))
                                eng.clear()
                                eng.decode(tokens[:1])
                                t1 = time.perf_counter()
                                for i in range(tg):
                                    eng.decode([tokens[(i * 7) % pp]])
                                tgs.append(tg / (time.perf_counter() - t1))
                            rss_run = proc.memory_info().rss
                        finally:
                            eng.close()
                        t0 = time.perf_counter()
                        LlamaEngine(path, settings).close()
                        warm = (time.perf_counter() - t0) * 1000.0
                        tg_mean = statistics.mean(tgs)
                        rows.append(BenchRow(
                            threads=settings.threads, batch=nb, mmap=mm, cache_type=ct, n_gpu_layers=ngl,
                            pp_tps=statistics.mean(pps), pp_std=statistics.pstdev(pps),
                            tg_tps=tg_mean, tg_std=statistics.pstdev(tgs), load_cold_ms=cold, load_warm_ms=warm,
                            rss_after_load=rss_load, rss_after_run=rss_run,
                            bandwidth_gbs=size * tg_mean / 1e9, pp_runs=pps, tg_runs=tgs,
                            resident_before_cold=resident,
                        ))
    return rows


# -- one model load in a fresh process (the mmap lesson) ------------------------------------------

# Runs in a child: imports and backend start-up first, so the RSS difference is the load alone (plus a
# 32-token context: a few hundred KiB of KV cache; its logits buffer is sized by n_batch = 8).
_LOAD_PROBE = """
import json, sys
from tui.engine.binding import ensure_backend
from tui.engine.llama import LlamaEngine
from tui.engine.residency import rss_split
from tui.engine.settings import EngineSettings
ensure_backend()
settings = EngineSettings(n_ctx=32, n_batch=8, n_ubatch=8, n_threads=1, use_mmap=sys.argv[2] == "1")
before = rss_split()
eng = LlamaEngine(sys.argv[1], settings)
after = rss_split()
delta = after.minus(before) if before and after else None
print("LOAD_PROBE " + json.dumps({"load_ms": eng.load_ms, "anon": delta and delta.anon, "file": delta and delta.file}))
"""


@dataclass(frozen=True, slots=True)
class LoadProbe:
    """One model load (``llama_model_load_from_file``) in a fresh process."""

    use_mmap: bool
    load_ms: float
    rss_anon: int | None  # what the load added to the process's anonymous resident memory (None: not measured)
    rss_file: int | None  # ... and to its file-backed resident memory


def probe_load(path: str | os.PathLike[str], *, use_mmap: bool, timeout: float = 120.0) -> LoadProbe:
    """Load the model once in a short child process and report its load time and RSS growth.

    A child, not this process: a fresh process has no other model mapped and no freed heap to reuse, so the
    RSS difference is the load's own; and when the child exits nothing maps the file any more, so its pages
    can be dropped from the page cache again. Bounded by ``timeout`` seconds."""
    import subprocess
    import sys

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the child imports this very package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path), "1" if use_mmap else "0"],
                             check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EngineError(f"loading {Path(path).name} took longer than {timeout:.0f} s") from None
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("LOAD_PROBE "):
            data = json.loads(line.removeprefix("LOAD_PROBE "))
            return LoadProbe(use_mmap, float(data["load_ms"]), data["anon"], data["file"])
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    raise EngineError(f"loading {Path(path).name} in a child process failed (exit {out.returncode}): {tail}")


def _spread_text(mean: float, std: float, runs: list[float], digits: int) -> str:
    """``mean ± stddev`` over the repetitions; the mean alone from one run (a ± 0 would claim a precision
    that one measurement cannot have)."""
    return f"{mean:.{digits}f} (1 run)" if len(runs) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def bench_markdown(path: str, rows: list[BenchRow], gpu: bool) -> str:
    lines = [(f"model: {Path(path).name} ({human_bytes(Path(path).stat().st_size)}) — GPU offload in this "
              f"llama.cpp build: {'yes' if gpu else 'no (CPU build: -ngl has no effect)'}"), "",
             ("| threads | batch | mmap | cache | ngl | pp t/s | tg t/s | load cold ms | cached before cold | "
              "load warm ms | ~GB/s read |"),
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cached = "?" if r.resident_before_cold is None else f"{r.resident_before_cold:.0%}"
        lines.append(f"| {r.threads} | {r.batch} | {'on' if r.mmap else 'off'} | {r.cache_type} | {r.n_gpu_layers} | "
                     f"{_spread_text(r.pp_tps, r.pp_std, r.pp_runs, 1)} | "
                     f"{_spread_text(r.tg_tps, r.tg_std, r.tg_runs, 1)} | {r.load_cold_ms:.0f} | {cached} | "
                     f"{r.load_warm_ms:.0f} | {r.bandwidth_gbs:.1f} |")
    return "\n".join(lines) + "\n"
