"""Readable tails of service logs for failure messages."""

from __future__ import annotations

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Dynamo's tracing logger colours its lines


def plain(text: str) -> str:
    """Log text without terminal colour codes."""
    return _ANSI.sub("", text)


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log, without terminal colour codes."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as error:
        return f"(log {path} unreadable: {error})"
    kept = plain(text).splitlines()[-lines:]
    return "\n".join(kept) if kept else "(log is empty)"


def framed(name: str, path: Path, lines: int = 25) -> str:
    return f"--- last lines of {name} log ({path}) ---\n{tail(path, lines)}\n--- end of {name} log ---"
