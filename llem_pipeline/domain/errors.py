"""Readable configuration errors: every message names the source, the field path, the value and the fix."""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration (experiment or study) that cannot be used; the message says where, what and how to fix."""


def short_key(key: str, limit: int = 60) -> str:
    """Return a field name or dotted key cut to ``limit`` characters (a hostile key may be megabytes long)."""
    return key if len(key) <= limit else key[: limit - 3] + "..."


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + short_key(str(item)))
    return "".join(parts) or "<root>"


class _BoundedRepr(reprlib.Repr):
    """reprlib.Repr that never converts a huge integer to text (Python refuses past 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # about 77 digits: show the size instead of the digits
            return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()  # bounded repr: depth 3, 8 items per container, 80 characters per string/number
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80


def short(value: Any, limit: int = 80) -> str:
    """Return a repr of ``value`` of at most ``limit`` characters (containers cut at 8 items, 3 levels deep).

    Bounded in time too: a YAML alias bomb or a huge nested input is never walked in full.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails must not hide the error being described
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def truncate_message(text: str, limit: int = 2000) -> str:
    """Return ``text`` cut to ``limit`` characters, ending with how many characters were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


MAX_ERROR_LINES = 20
"""describe_validation_error lists at most this many problems, then says how many more there were."""


def describe_validation_error(err: ValidationError, source: str | None = None, prefix: str = "") -> str:
    """Return one line per pydantic error: ``source: field.path = value: message``.

    ``prefix`` is prepended to every field path (e.g. 'base' for a study's base config).
    Union branches (the str / synthetic forms of ``dataset``) are collapsed to the field itself.
    Values, keys and messages are truncated; after MAX_ERROR_LINES lines one more line says how many
    further problems there were.
    """
    lines: list[str] = []
    seen: set[str] = set()
    more = 0
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p in {"str", "SyntheticDatasetConfig"} or p.startswith("function-"))))
        path = _fmt_loc(((prefix,) if prefix else ()) + loc)
        msg = truncate_message(e["msg"].removeprefix("Value error, "), 500)
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not part of the schema; check the spelling or remove it)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "finite_number":
            msg = "must be a finite number: NaN, inf and -inf are not allowed"
        value = "" if e["type"] == "missing" or loc == () else f" = {short(e.get('input'))}"
        line = f"{source + ': ' if source else ''}{path}{value}: {msg}"
        if line in seen:
            continue
        seen.add(line)
        if len(lines) >= MAX_ERROR_LINES:
            more += 1
            continue
        lines.append(line)
    if more:
        lines.append(f"{source + ': ' if source else ''}... and {more} more problem(s)")
    return "\n".join(lines)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _is_control(ch: str) -> bool:
    """True for characters a terminal may act on or hide: C0/C1 controls, DEL, and the bidi/zero-width format marks."""
    code = ord(ch)
    return (code < 0x20 or 0x7F <= code <= 0x9F or 0x200B <= code <= 0x200F or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069 or code == 0xFEFF)


def escape_control(text: str) -> str:
    """Return ``text`` with control characters written as escapes (``\\n``, ``\\x1b``, ``\\u202e``), safe to print
    on one terminal line: nothing in it can move the cursor, recolour, hide or reorder what follows."""
    if not any(_is_control(ch) for ch in text):
        return text
    return "".join(_escape_char(ch) if _is_control(ch) else ch for ch in text)
