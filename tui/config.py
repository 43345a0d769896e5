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


def validation_problem(exc: ValidationError) -> str:
    """pydantic's first complaint as one line: ``field.path: what is wrong (got …)``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = re.sub(r" or instance of \w+", "", first.get("msg", "invalid"))
    if first.get("type") == "extra_forbidden":
        msg = "unknown setting"
    if first.get("type") == "value_error":  # our own validator's words, which name the value already
        return f"{where}: {(first.get('ctx') or {}).get('error', msg)}"
    got = first.get("input")
    shown = "" if first.get("type") in ("missing", "extra_forbidden") else f" (got {got!r:.60})"
    return f"{where}: {msg}{shown}" if where else f"{msg}{shown}"


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file means defaults. Raises ConfigError (file and field)."""
    from .engine.errors import EngineError
    from .engine.settings import EngineSettings

    path = path or app_dirs().config_file
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        f = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problem(exc)}") from None
    try:
        EngineSettings.from_dict(f.engine, strict=True)
    except EngineError as exc:
        raise ConfigError(f"{path}: [engine] {exc}") from None
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
