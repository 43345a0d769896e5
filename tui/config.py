"""Configuration and the app's directories.

* ``config.toml`` in the user config dir (``$LLMTUI_CONFIG`` overrides the path)
  holds what the user chose to write: model directories, engine defaults, UI.
* ``state.json`` in the user state dir holds what the app remembers by itself
  (last theme, last model, last preset) so the user's file is never rewritten.
* ``$LLMTUI_HOME`` puts every directory under one root (tests, portable use).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydField

from .safe_text import visible
from .units import quoted

APP = "llmtui"


class ConfigError(Exception):
    """A problem in a config/preset/theme file, reported as one line."""


@dataclass(frozen=True, slots=True)
class Dirs:
    config: Path
    data: Path
    cache: Path
    state: Path

    @property
    def config_file(self) -> Path:
        env = os.environ.get("LLMTUI_CONFIG")
        return Path(env).expanduser() if env else self.config / "config.toml"

    @property
    def presets(self) -> Path:
        return self.config / "presets"

    @property
    def themes(self) -> Path:
        return self.config / "themes"

    @property
    def sessions(self) -> Path:
        return self.data / "sessions"

    @property
    def models(self) -> Path:
        """Where the app writes models (assembled Gemma, quantized variants)."""
        return self.data / "models"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"


def app_dirs() -> Dirs:
    home = os.environ.get("LLMTUI_HOME")
    if home:
        root = Path(home).expanduser()
        return Dirs(root / "config", root / "data", root / "cache", root / "state")
    return Dirs(
        Path(platformdirs.user_config_dir(APP)),
        Path(platformdirs.user_data_dir(APP)),
        Path(platformdirs.user_cache_dir(APP)),
        Path(platformdirs.user_state_dir(APP)),
    )


@dataclass(frozen=True, slots=True)
class Config:
    models_dirs: tuple[Path, ...] = ()
    model: str | None = None  # default model: a name from `llmtui models` or a path
    scan_hf_cache: bool = True
    keep_loaded: int = 2  # models kept in memory (an LRU) so switching back is instant
    engine: dict[str, Any] = field(default_factory=dict)  # EngineSettings overrides
    theme: str | None = None
    preset: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key(s)
    source: Path | None = None  # the file this came from (None = defaults)


class _Section(BaseModel):
    """A table of the config file: strict types (TOML has real ones: ``use_mmap = "no"`` is not a
    boolean), unknown keys rejected (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Models(_Section):
    dirs: list[str] | str = PydField(default_factory=list)
    default: str | None = None
    scan_hf_cache: bool = True
    keep_loaded: int = PydField(2, ge=1, le=16)


class _Ui(_Section):
    theme: str | None = None
    preset: str | None = None


class _ConfigFile(_Section):
    models: _Models = PydField(default_factory=_Models)
    engine: dict[str, Any] = PydField(default_factory=dict)  # checked by EngineSettings itself
    ui: _Ui = PydField(default_factory=_Ui)
    keys: dict[str, str] = PydField(default_factory=dict)


_EXPECTED = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number", "finite_number": "expected a finite number",
    "string_type": "expected a string", "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "list_type": "expected a list", "dict_type": "expected a table", "model_type": "expected a table",
}
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}  # how pydantic names a union's alternatives in a loc


def _field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's loc as the config file spells it: ``models.dirs[0]``, ``keys."gen.stop"`` (a union's
    alternative, ``list[str]``, left out)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or part in _TYPE_TAGS:
            continue
        else:
            name = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else f'"{visible(part)}"'
            out += f".{name}" if out else name
    return out


def _expected(error: Any) -> str:
    ctx = error.get("ctx") or {}
    kind = error.get("type")
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    return _EXPECTED.get(kind) or re.sub(r" or instance of \w+", "", error.get("msg", "invalid")).lower()


def validation_problem(exc: ValidationError) -> str:
    """pydantic's first complaint as one line: ``field.path: what is wrong, got …`` (the value in quotes,
    its control characters visible: never Python's escapes)."""
    errors = exc.errors()
    first = errors[0]
    where = _field_path(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        return f"{where}: unknown setting"
    if first.get("type") == "value_error":  # our own validator's words, which name the value already
        return f"{where}: {(first.get('ctx') or {}).get('error', first.get('msg', 'invalid'))}"
    # a union (``dirs``: a string or a list of strings) fails once per alternative: name them all
    expected = list(dict.fromkeys(_expected(e) for e in errors if _field_path(tuple(e.get("loc", ()))) == where))
    what = expected[0] + "".join(" or " + e.removeprefix("expected ") for e in expected[1:])
    if first.get("type") == "missing":
        return f"{where}: missing"
    got = quoted(first.get("input"))
    got = got if len(got) <= 60 else got[:59] + "…"
    return f"{where}: {what}, got {got}" if where else f"{what}, got {got}"


def shown_path(path: Path) -> str:
    """A config file's path in a message: ``config /home/me/.config/llmtui/config.toml``."""
    return f"config {visible(path)}"


# where a setting written at the top level of the file belongs
_SECTION_OF = {**{k: "models" for k in ("dirs", "default", "scan_hf_cache", "keep_loaded")},
               **{k: "ui" for k in ("theme", "preset")}}


def _misplaced(exc: ValidationError) -> str | None:
    """``n_ctx = 4096`` above every table: the one-line hint that it belongs in ``[engine]``."""
    from .engine.settings import EngineSettings

    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") != "extra_forbidden" or len(loc) != 1:
        return None
    key = str(loc[0])
    section = "engine" if key in EngineSettings.__dataclass_fields__ else _SECTION_OF.get(key)
    return f"{key}: not a top-level setting: it belongs in the [{section}] table" if section else None


def _engine_problem(message: str) -> str:
    """An EngineError about ``[engine]`` with the field as the file spells it: ``engine.n_ctx: …``."""
    from .engine.settings import EngineSettings

    m = re.match(r"(\w+)([: ])", message)
    if m and m.group(1) in EngineSettings.__dataclass_fields__:
        return f"engine.{message}"
    return f"[engine] {message}"


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file means defaults. Raises ConfigError (file and field)."""
    from .engine.errors import EngineError
    from .engine.settings import EngineSettings

    path = path or app_dirs().config_file
    if not path.exists():
        return Config()
    where = shown_path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    try:
        f = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_misplaced(exc) or validation_problem(exc)}") from None
    try:
        EngineSettings.from_dict(f.engine, strict=True)
    except EngineError as exc:
        raise ConfigError(f"{where}: {_engine_problem(str(exc))}") from None
    dirs = [f.models.dirs] if isinstance(f.models.dirs, str) else f.models.dirs
    return Config(
        models_dirs=tuple(Path(d).expanduser() for d in dirs),
        model=f.models.default,
        scan_hf_cache=f.models.scan_hf_cache,
        keep_loaded=f.models.keep_loaded,
        engine=dict(f.engine),
        theme=f.ui.theme,
        preset=f.ui.preset,
        keys=dict(f.keys),
        source=path,
    )


# -- remembered state ------------------------------------------------------------


def load_state() -> dict[str, Any]:
    path = app_dirs().state_file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(**changes: Any) -> bool:
    """Merge ``changes`` into state.json atomically. Returns False if it could not be written."""
    path = app_dirs().state_file
    state = load_state()
    state.update(changes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        return False
    return True
