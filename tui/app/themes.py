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
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from textual.color import Color
from textual.theme import Theme

from ..config import validation_problem
from ..safe_text import is_clean, visible

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


def _colour(value: str) -> str:
    try:
        Color.parse(value)
    except Exception:  # ColorParseError is no ValueError: pydantic must see one
        raise ValueError(f"not a colour: {value!r}") from None
    return value


Colour = Annotated[str, AfterValidator(_colour)]


class _ThemeFile(BaseModel):
    """A theme file's fields, strictly typed (``primary = 123`` is no colour: it must not stop the app)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str | None = Field(None, min_length=1, max_length=64)
    dark: bool = True
    primary: Colour
    secondary: Colour | None = None
    accent: Colour | None = None
    warning: Colour | None = None
    error: Colour | None = None
    success: Colour | None = None
    foreground: Colour | None = None
    background: Colour | None = None
    surface: Colour | None = None
    panel: Colour | None = None
    boost: Colour | None = None
    luminosity_spread: float = Field(0.15, ge=0.0, le=1.0)
    text_alpha: float = Field(0.95, ge=0.0, le=1.0)
    variables: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict)


def load_theme_file(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{path}: invalid TOML: {exc}") from None
    try:
        f = _ThemeFile.model_validate(data)
    except ValidationError as exc:
        raise ThemeFileError(f"{path}: {validation_problem(exc)}") from None
    fields = f.model_dump(exclude_none=True)
    fields["name"] = f.name or path.stem
    if not is_clean(fields["name"], keep=""):
        raise ThemeFileError(f"{path}: name: control characters are not allowed ({visible(fields['name'])})")
    for bad in [k for k, v in f.variables.items() if not is_clean(k + v, keep="")]:
        raise ThemeFileError(f"{path}: variables.{visible(bad)}: control characters are not allowed")
    try:
        theme = Theme(**fields)
        theme.to_color_system().generate()  # what the app does with it at start-up: fail here, not there
    except Exception as exc:  # Textual's own checks, whatever they raise
        raise ThemeFileError(f"{path}: not a usable theme: {exc}") from None
    return theme


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
