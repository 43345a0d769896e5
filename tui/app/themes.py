"""Themes: the shipped ``themes/*.toml`` plus the user's, registered as Textual themes.

A theme file holds the fields of ``textual.theme.Theme`` (``name``, ``primary``
and optionally secondary, accent, warning, error, success, foreground,
background, surface, panel, boost, dark, and a ``[variables]`` table). A bad
file is reported (file and field) and skipped.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

_COLOR_FIELDS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background",
                 "surface", "panel", "boost")
DEFAULT_THEME = "llmtui-dark"


class ThemeFileError(Exception):
    pass


@dataclass(slots=True)
class ThemeSet:
    themes: list[Theme] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def shipped_theme_dir() -> Path:
    try:
        path = Path(str(importlib.resources.files("tui._themes")))
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "themes"  # a source checkout


def load_theme_file(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{path}: invalid TOML: {exc}") from None
    allowed = {"name", "dark", "variables", "luminosity_spread", "text_alpha", *_COLOR_FIELDS}
    unknown = set(data) - allowed
    if unknown:
        raise ThemeFileError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ThemeFileError(f"{path}: name: expected a string")
    if "primary" not in data:
        raise ThemeFileError(f"{path}: primary: required")
    kwargs: dict[str, object] = {"name": name}
    for key in _COLOR_FIELDS:
        if key in data:
            value = data[key]
            try:
                Color.parse(value)
            except (ColorParseError, TypeError, ValueError):
                raise ThemeFileError(f"{path}: {key}: not a colour: {value!r}") from None
            kwargs[key] = value
    if "dark" in data:
        if not isinstance(data["dark"], bool):
            raise ThemeFileError(f"{path}: dark: expected true or false")
        kwargs["dark"] = data["dark"]
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ThemeFileError(f"{path}: variables: expected a table of strings")
    kwargs["variables"] = dict(variables)
    return Theme(**kwargs)  # type: ignore[arg-type]


def load_themes(*dirs: Path) -> ThemeSet:
    out = ThemeSet()
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            try:
                out.themes.append(load_theme_file(path))
            except ThemeFileError as exc:
                out.errors.append(str(exc))
    return out
