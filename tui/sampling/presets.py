"""Sampling presets: validated, ordered lists of samplers with parameters.

Built-in presets live here; user presets are TOML files in the config dir's
``presets/`` folder::

    name = "my-story"                 # defaults to the file name
    description = "warm and varied"
    [[samplers]]
    type = "top_k"                    # a sampler name (llama.cpp's, '-' or '_')
    k = 60
    [[samplers]]
    type = "temp"
    t = 0.9
    # a chain that does not end in a selecting sampler gets `dist` appended,
    # as llama.cpp's common sampler does

A bad file is reported by file and field and skipped; it never hides the
other presets. Seeds come from the run (``--seed``), like llama.cpp's
``params.seed``, and go to every seeded sampler.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import Sampler
from .chain import Chain
from .samplers import SAMPLERS
from .samplers.grammar import with_grammar
from .schema import BuildContext, Param

__all__ = ["ALIASES", "BUILTIN_PRESETS", "DEFAULT_PRESET", "SAMPLER_TYPES", "BuildContext", "Param", "Preset",
           "PresetCatalog", "PresetError", "SamplerSpec", "SamplerType", "canonical_name", "load_preset_file",
           "load_presets", "save_preset", "validate_specs"]

_F32_MAX = 3.4028234663852886e38
_INT_LIMIT = (1 << 31) - 1  # C ints: llama.cpp's samplers take int32 parameters


# what tui.safe_text would make visible (sampling imports nothing of tui): C0, DEL, C1, bidi overrides,
# lone surrogates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class PresetError(Exception):
    """A preset that cannot be used; the message names the file and field."""


def _quoted(value: Any) -> str:
    """A value from a preset file or a flag, for an error message: text in quotes with its control
    characters as ``\\xNN`` (one line; backslashes single, not doubled as ``repr`` writes them);
    anything else as Python writes it."""
    if not isinstance(value, str):
        return repr(value)
    return "'" + _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                              else f"\\u{ord(m.group()):04x}", value) + "'"


@dataclass(frozen=True, slots=True)
class SamplerType:
    """A sampler class as presets see it; everything here is what the class declares."""

    cls: type[Sampler]

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def params(self) -> Mapping[str, Param]:
        return self.cls.schema

    @property
    def selects(self) -> bool:
        return self.cls.selects

    @property
    def seeded(self) -> bool:
        return self.cls.seeded

    @property
    def help(self) -> str:
        return self.cls.help

    def build(self, ctx: BuildContext, params: Mapping[str, Any]) -> Sampler:
        return self.cls.from_params(ctx, params)


SAMPLER_TYPES: dict[str, SamplerType] = {name: SamplerType(cls) for name, cls in SAMPLERS.items()}

# llama.cpp's --samplers names and short forms
ALIASES = {
    "top-k": "top_k", "k": "top_k", "top-p": "top_p", "p": "top_p", "nucleus": "top_p", "min-p": "min_p",
    "m": "min_p", "typ_p": "typical", "typ-p": "typical", "typical_p": "typical", "y": "typical",
    "temperature": "temp", "t": "temp", "top-n-sigma": "top_n_sigma", "s": "top_n_sigma", "x": "xtc",
    "d": "dry", "e": "penalties", "penalty": "penalties", "mirostat-v2": "mirostat_v2",
    "adaptive-p": "adaptive_p", "logit-bias": "logit_bias", "dynatemp": "temp_ext", "temp-ext": "temp_ext",
}


def base_name(name: str) -> str:
    """A preset's name without the temperature the +/- keys added ("balanced T=0.9" → "balanced")."""
    return name.split(" T=")[0]


def canonical_name(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key).replace("-", "_")
    return key if key in SAMPLER_TYPES else None


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self, ctx: BuildContext) -> Sampler:
        return SAMPLER_TYPES[self.name].build(ctx, self.params)

    def native(self, ctx: BuildContext) -> tuple[str, dict[str, Any]]:
        """The same sampler as a spec for llama.cpp's own (``tui.engine.oracle.native_chain``): every
        parameter as this run resolves it, with the seed."""
        return self.name, SAMPLER_TYPES[self.name].cls.resolve(ctx, self.params)

    def describe(self) -> str:
        t = SAMPLER_TYPES[self.name]
        shown = [f"{k}={self.params.get(k, p.default)}" for k, p in t.params.items() if k != "sequence_breakers"]
        return f"{self.name}({', '.join(shown)})" if shown else self.name


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    samplers: tuple[SamplerSpec, ...]
    description: str = ""
    source: str = "built-in"
    # the preset this one was edited from (``with_param``): its description then says what changed
    base: Preset | None = field(default=None, compare=False, repr=False)
    # one request's grammar (``with_grammar``), in its start state; never in a preset file
    grammar: Any = field(default=None, compare=False, repr=False)

    def build(self, ctx: BuildContext, *, trace: bool = True, seen: Iterable[int] = ()) -> Chain:
        """A fresh chain; ``seen``: tokens it has already accepted (penalties and DRY remember them).

        With a grammar (``ctx.grammar``, else this preset's), the chain starts with a grammar stage on a copy
        of it, which ``seen`` advances like every other stage."""
        stages = [s.build(ctx) for s in self.samplers]
        grammar = ctx.grammar if ctx.grammar is not None else self.grammar
        if grammar is not None:
            stages = with_grammar(stages, grammar.clone())
        chain = Chain(stages, trace=trace)
        for token in seen:
            chain.accept(token)
        return chain

    def with_grammar(self, grammar: Any) -> "Preset":
        """A copy whose chains start with a grammar stage for ``grammar`` (a filter in its start state, see
        :class:`~.schema.BuildContext`): how a request constrains its output without a preset of its own."""
        return Preset(self.name, self.samplers, self.description, self.source, self.base, grammar)

    def native_specs(self, ctx: BuildContext) -> list[tuple[str, dict[str, Any]]]:
        return [s.native(ctx) for s in self.samplers]

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.samplers)

    def with_param(self, sampler: str, param: str, value: Any) -> "Preset":
        """A copy with one parameter changed (the first sampler of that name; added if missing). Its
        description says what differs from the preset it was edited from ("balanced with temp t=1.5
        (was 0.7)"): the old one ("moderate temperature") may no longer be true."""
        specs = list(self.samplers)
        for i, s in enumerate(specs):
            if s.name == sampler:
                specs[i] = SamplerSpec(s.name, {**s.params, param: value})
                break
        else:
            selector = len(specs) - 1 if specs and SAMPLER_TYPES[specs[-1].name].selects else len(specs)
            specs.insert(selector, SamplerSpec(sampler, {param: value}))
        checked = validate_specs(specs, where=self.name)
        base = self.base or self
        changes = changed_params(base.samplers, checked)
        description = f"{base.name} with {', '.join(changes)}" if changes else base.description
        if len(description) > MAX_DESCRIPTION:
            description = description[: MAX_DESCRIPTION - 1] + "…"
        return Preset(self.name, checked, description, self.source, base, self.grammar)

    def reordered(self, names: Sequence[str]) -> "Preset":
        """llama.cpp's ``--samplers``: this order, keeping known parameters, then the selector."""
        have = {s.name: s for s in self.samplers}
        specs: list[SamplerSpec] = []
        for raw in names:
            name = canonical_name(raw)
            if name is None:
                raise PresetError(f"--samplers: unknown sampler {_quoted(raw)} (known: {', '.join(SAMPLER_TYPES)})")
            specs.append(have.get(name, SamplerSpec(name, {})))
        if not specs or not SAMPLER_TYPES[specs[-1].name].selects:
            last = self.samplers[-1] if self.samplers and SAMPLER_TYPES[self.samplers[-1].name].selects else None
            specs.append(last or SamplerSpec("dist"))
        return Preset(self.name, validate_specs(specs, where="--samplers"), self.description, self.source, self.base,
                      self.grammar)

    def as_toml(self) -> str:
        lines = [f"name = {_toml_value(self.name)}"]
        if self.description:
            lines.append(f"description = {_toml_value(self.description)}")
        for s in self.samplers:
            lines += ["", "[[samplers]]", f'type = "{s.name}"']
            for k, v in s.params.items():
                lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": self.source,
                "samplers": [{"type": s.name, **s.params} for s in self.samplers]}


MAX_DESCRIPTION = 200  # what a preset file may hold


def changed_params(before: Sequence[SamplerSpec], after: Sequence[SamplerSpec]) -> list[str]:
    """What ``after`` sets differently from ``before``, per sampler and parameter (defaults filled in):
    ``temp t=1.5 (was 0.7)``; a sampler ``before`` lacks is ``(added)``."""
    old = {s.name: s for s in before}
    out = []
    for spec in after:
        schema = SAMPLER_TYPES[spec.name].params
        prev = old.get(spec.name)
        for key, p in schema.items():
            now = spec.params.get(key, p.default)
            was = prev.params.get(key, p.default) if prev is not None else None
            if prev is not None and now == was:
                continue
            if prev is None and key not in spec.params:
                continue
            shown = f"{spec.name} {key}={_short(now)}"
            out.append(f"{shown} (added)" if prev is None else f"{shown} (was {_short(was)})")
    return out


def _short(v: Any) -> str:
    """A parameter value for a description: numbers ``:g``, anything else (a list, a table) as "…"."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "…"
    return f"{v:g}"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    raise PresetError(f"cannot write {_quoted(v)} to TOML")


def _check_param(where: str, t: SamplerType, key: str, value: Any) -> Any:
    if key not in t.params:
        known = ", ".join(t.params) or "none"
        raise PresetError(f"{where}: {t.name} has no parameter {_quoted(key)} (parameters: {known})")
    p = t.params[key]
    if p.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PresetError(f"{where}.{key}: expected a number, got {_quoted(value)}")
        value = float(value)
        if not math.isfinite(value) or abs(value) > _F32_MAX:  # the samplers compute in float32, as C does
            raise PresetError(f"{where}.{key}: expected a finite number (float32), got {_quoted(value)}")
    elif p.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PresetError(f"{where}.{key}: expected an integer, got {_quoted(value)}")
        if not -_INT_LIMIT - 1 <= value <= _INT_LIMIT:
            raise PresetError(f"{where}.{key}: {value} is out of range ({-_INT_LIMIT - 1:,}..{_INT_LIMIT:,})")
    elif p.kind is list:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise PresetError(f"{where}.{key}: expected a list of strings")
        if len(value) > 64 or any(len(x) > 64 for x in value):
            raise PresetError(f"{where}.{key}: at most 64 strings of at most 64 characters")
    elif p.kind is dict:
        if not isinstance(value, dict):
            raise PresetError(f"{where}.{key}: expected a table of token id = bias")
        for k, v in value.items():
            if (not str(k).isascii() or not str(k).isdigit() or len(str(k)) > 9 or isinstance(v, bool)
                    or not isinstance(v, (int, float)) or (not math.isfinite(v) and v != -math.inf)):
                raise PresetError(f"{where}.{key}: entries must be token_id = finite number or -inf "
                                  f"(got {_quoted(k)} = {_quoted(v)})")
        if len(value) > 1024:
            raise PresetError(f"{where}.{key}: at most 1,024 biased tokens (got {len(value):,})")
    if p.lo is not None and p.lo_open and value <= p.lo:
        raise PresetError(f"{where}.{key}: {value} must be above {p.lo}")
    if p.lo is not None and value < p.lo:
        raise PresetError(f"{where}.{key}: {value} is below the minimum {p.lo}")
    if p.hi is not None and value > p.hi:
        raise PresetError(f"{where}.{key}: {value} is above the maximum {p.hi}")
    return value


def validate_specs(specs: Iterable[SamplerSpec | Mapping[str, Any]], *, where: str) -> tuple[SamplerSpec, ...]:
    out: list[SamplerSpec] = []
    for i, raw in enumerate(specs):
        here = f"{where}: samplers[{i}]"
        if isinstance(raw, SamplerSpec):
            name, params = raw.name, dict(raw.params)
        elif isinstance(raw, Mapping):
            if "type" not in raw:
                raise PresetError(f"{here}: missing 'type' (one of {', '.join(SAMPLER_TYPES)})")
            name = raw["type"]
            params = {k: v for k, v in raw.items() if k != "type"}
        else:
            raise PresetError(f"{here}: expected a table with a 'type'")
        canon = canonical_name(str(name))
        if canon is None:
            raise PresetError(f"{here}.type: unknown sampler {_quoted(name)} (known: {', '.join(SAMPLER_TYPES)})")
        t = SAMPLER_TYPES[canon]
        checked = {k: _check_param(f"{here}", t, k, v) for k, v in params.items()}
        out.append(SamplerSpec(canon, checked))
    if not out:
        raise PresetError(f"{where}: samplers: the chain is empty")
    for i, s in enumerate(out[:-1]):
        if SAMPLER_TYPES[s.name].selects:
            raise PresetError(f"{where}: samplers[{i}].type: {s.name} selects the token, so it must come last")
    if not SAMPLER_TYPES[out[-1].name].selects:
        out.append(SamplerSpec("dist"))  # as llama.cpp's common sampler does
    return tuple(out)


def _builtin(name: str, description: str, *specs: tuple[str, dict[str, Any]]) -> Preset:
    return Preset(name, validate_specs([SamplerSpec(n, p) for n, p in specs], where=name), description)


BUILTIN_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _builtin("greedy", "always the most likely token: deterministic", ("greedy", {})),
        _builtin(
            "llama.cpp-default", "llama.cpp's common defaults (its disabled samplers left out)",
            ("top_k", {"k": 40}), ("top_p", {"p": 0.95}), ("min_p", {"p": 0.05}), ("temp", {"t": 0.8}), ("dist", {}),
        ),
        _builtin(
            "precise", "low temperature, tight truncation: factual answers",
            ("top_k", {"k": 20}), ("top_p", {"p": 0.8}), ("min_p", {"p": 0.1}), ("temp", {"t": 0.3}), ("dist", {}),
        ),
        _builtin(
            "balanced", "everyday chat: mild repetition penalty, moderate temperature",
            ("penalties", {"last_n": 64, "repeat": 1.1}), ("top_k", {"k": 40}), ("top_p", {"p": 0.9}),
            ("min_p", {"p": 0.05}), ("temp", {"t": 0.7}), ("dist", {}),
        ),
        _builtin(
            "creative", "stories: warmer, wider, presence penalty, occasional XTC",
            ("penalties", {"last_n": 64, "presence": 0.3}), ("top_k", {"k": 100}), ("top_p", {"p": 0.98}),
            ("min_p", {"p": 0.02}), ("xtc", {"probability": 0.3, "threshold": 0.15}), ("temp", {"t": 1.1}),
            ("dist", {}),
        ),
        _builtin(
            "wild", "high temperature, loose truncation: the 'dreamy vs violent' story experiment",
            ("min_p", {"p": 0.005}), ("temp", {"t": 1.8}), ("dist", {}),
        ),
        _builtin(
            "mirostat", "llama.cpp --mirostat 2: temperature then mirostat 2.0 (tau 5, eta 0.1)",
            ("temp", {"t": 0.8}), ("mirostat_v2", {"tau": 5.0, "eta": 0.1}),
        ),
    ]
}
DEFAULT_PRESET = "balanced"


def load_preset_file(path: Path) -> Preset:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(data) - {"name", "description", "samplers"}
    if unknown:
        raise PresetError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected name, description, samplers)")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise PresetError(f"{path}: name: expected a non-empty string of at most 64 characters")
    samplers = data.get("samplers")
    if not isinstance(samplers, list):
        raise PresetError(f"{path}: samplers: expected a list of [[samplers]] tables")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise PresetError(f"{path}: description: expected a string of at most {MAX_DESCRIPTION} characters")
    for key, text in (("name", name), ("description", description)):
        if _CONTROL.search(text):
            raise PresetError(f"{path}: {key}: control characters are not allowed")
    return Preset(name.strip(), validate_specs(samplers, where=str(path)), description, str(path))


@dataclass(slots=True)
class PresetCatalog:
    presets: dict[str, Preset]
    errors: list[str]

    def names(self) -> list[str]:
        return list(self.presets)

    def get(self, name: str) -> Preset:
        if name in self.presets:
            return self.presets[name]
        low = name.lower()
        hits = [p for n, p in self.presets.items() if n.lower() == low] or \
               [p for n, p in self.presets.items() if n.lower().startswith(low)]
        if len(hits) == 1:
            return hits[0]
        raise PresetError(f"no preset named {_quoted(name)} (known: {', '.join(self.presets)})")

    def neighbour(self, name: str, step: int) -> Preset:
        names = self.names()
        i = names.index(name) if name in names else 0
        return self.presets[names[(i + step) % len(names)]]


def load_presets(directory: Path | None) -> PresetCatalog:
    """Built-ins, then every ``*.toml`` in ``directory`` (a user preset may override a built-in)."""
    presets = dict(BUILTIN_PRESETS)
    errors: list[str] = []
    if directory is not None and directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            try:
                p = load_preset_file(path)
            except PresetError as exc:
                errors.append(str(exc))
                continue
            presets[p.name] = p
    return PresetCatalog(presets, errors)


def save_preset(preset: Preset, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in preset.name)
    path = directory / f"{safe}.toml"
    path.write_text(preset.as_toml(), encoding="utf-8")
    return path
