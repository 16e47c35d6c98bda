"""Readable configuration errors: every message names the source, the field path, the value and the fix."""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration (experiment or study) that cannot be used; the message says where, what and how to fix."""


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


_REPR = reprlib.Repr()  # bounded repr: depth 3, 8 items per container, 80 characters per string/number
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80


def _short(value: Any, limit: int = 80) -> str:
    # bounded repr: a YAML alias bomb or a huge nested input must not take minutes to describe
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_validation_error(err: ValidationError, source: str | None = None, prefix: str = "") -> str:
    """Return one line per pydantic error: ``source: field.path = value: message``.

    ``prefix`` is prepended to every field path (e.g. 'base' for a study's base config).
    Union branches (the str / synthetic forms of ``dataset``) are collapsed to the field itself.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p in {"str", "SyntheticDatasetConfig"} or p.startswith("function-"))))
        path = _fmt_loc(((prefix,) if prefix else ()) + loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not part of the schema; check the spelling or remove it)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        value = "" if e["type"] == "missing" or loc == () else f" = {_short(e.get('input'))}"
        line = f"{source + ': ' if source else ''}{path}{value}: {msg}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)
