"""User-facing errors.

A :class:`DgnamError` is a mistake in what the user asked for (a bad name, a missing file, an
out-of-range index). Entry scripts print its message as one line and exit with status 2, without a
traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class DgnamError(Exception):
    """A user mistake; the message is one line that names the bad value (and the valid choices)."""


def choices(values: Iterable[object], limit: int = 40) -> str:
    """Format valid choices for an error message, shortening very long lists."""
    vals = [str(v) for v in values]
    if len(vals) > limit:
        head = ", ".join(vals[: limit // 2])
        tail = ", ".join(vals[-limit // 4 :])
        return f"{head}, ... ({len(vals) - limit // 2 - limit // 4} more) ..., {tail}"
    return ", ".join(vals)


def first_line(e: object, limit: int = 160) -> str:
    """The first line of an exception's message (its type name if empty), cut to ``limit``
    characters: for one-line errors that quote what a library said."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]
