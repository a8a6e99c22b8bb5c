"""Reading recipes (``recipes/*.toml``, :mod:`facekit.training.recipe`) on any Python.

:func:`parse_toml` uses :mod:`tomllib` (Python 3.11+) or ``tomli`` where installed; on
Python 3.10 without ``tomli``, :func:`parse_toml_subset` reads the part of TOML that
recipes use (tables, and keys set to strings, numbers, booleans or one-line arrays of them).
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEY = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.+)$")
_TABLE = re.compile(r"^\[([A-Za-z0-9_.-]+)\]$")
_NUMBER = re.compile(r"^[+-]?(\d[\d_]*)(\.\d[\d_]*)?([eE][+-]?\d+)?$")


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    m = _NUMBER.match(text)
    if m:
        plain = text.replace("_", "")
        return float(plain) if m.group(2) or m.group(3) else int(plain)
    raise ValueError(f"unsupported value {text!r}")


def parse_toml_subset(text: str) -> dict[str, Any]:
    """The part of TOML recipes use: ``[a.b]`` tables and ``key = value`` (strings, numbers,
    booleans, one-line arrays of those). Anything else is a ValueError."""
    root: dict[str, Any] = {}
    table = root
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        try:
            m = _TABLE.match(line)
            if m:
                table = root
                for part in m.group(1).split("."):
                    table = table.setdefault(part, {})
                    if not isinstance(table, dict):
                        raise ValueError(f"{m.group(1)} is a value, not a table")
                continue
            m = _KEY.match(line)
            if not m:
                raise ValueError(f"cannot read {line!r}")
            key, value = m.group(1), m.group(2).strip()
            if key in table:
                raise ValueError(f"{key} is set twice")
            if value.startswith("[") and value.endswith("]"):
                inner = value[1:-1].strip().rstrip(",")
                table[key] = [_scalar(v) for v in inner.split(",")] if inner else []
            else:
                table[key] = _scalar(value)
        except ValueError as e:
            raise ValueError(f"line {n}: {e}") from e
    return root


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a dict: tomllib, else tomli, else :func:`parse_toml_subset`. ValueError when invalid."""
    try:
        import tomllib as toml  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return parse_toml_subset(text)
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ValueError(str(e)) from e
