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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

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


_ENGINE_KEYS = {
    "n_ctx", "n_threads", "n_threads_batch", "n_batch", "n_ubatch", "use_mmap", "use_mlock",
    "n_gpu_layers", "type_k", "type_v", "flash_attn", "seed",
}


def _positive_int(path: Path, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: {name}: expected a positive integer, got {value!r}")
    return value


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file means defaults. Raises ConfigError."""
    path = path or app_dirs().config_file
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    models = data.get("models", {})
    engine = data.get("engine", {})
    ui = data.get("ui", {})
    keys = data.get("keys", {})
    for section, value in (("models", models), ("engine", engine), ("ui", ui), ("keys", keys)):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
    dirs = models.get("dirs", [])
    if isinstance(dirs, str):
        dirs = [dirs]
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{path}: models.dirs must be a list of paths")
    bad_keys = [k for k, v in keys.items() if not isinstance(v, str)]
    if bad_keys:
        raise ConfigError(f"{path}: [keys] {bad_keys[0]}: expected a key name string like \"ctrl+s\"")
    unknown = set(engine) - _ENGINE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown [engine] key(s): {', '.join(sorted(unknown))}")
    return Config(
        models_dirs=tuple(Path(d).expanduser() for d in dirs),
        model=models.get("default"),
        scan_hf_cache=bool(models.get("scan_hf_cache", True)),
        keep_loaded=_positive_int(path, "models.keep_loaded", models.get("keep_loaded", 2)),
        engine=dict(engine),
        theme=ui.get("theme"),
        preset=ui.get("preset"),
        keys=dict(keys),
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
