"""User-facing errors.

A :class:`DgnamError` is a mistake in what the user asked for (a bad name, a missing file, an
out-of-range index). Entry scripts print its message as one line and exit with status 2, without a
traceback; everything else is a bug and keeps its traceback.

From Python, each error is also the built-in exception a Python user expects, so that
``except ValueError`` or ``except FileNotFoundError`` catch dgnam's errors as they catch any
library's, and ``except DgnamError`` catches them all:

- :class:`DgnamValueError` (a ``ValueError``): a bad value: a name, a number, an option, a file's
  contents (wrong keys, NaN weights);
- :class:`DgnamFileNotFoundError` (a ``FileNotFoundError``): a file or folder that does not exist;
- :class:`NonFiniteError` (a ``DgnamValueError``): a loss, activation or image that became NaN or
  infinite during a run (the step and the items are attributes);
- :class:`RunDirInUseError` (a ``RuntimeError``): a run folder that another dgnam process is writing.
"""

from __future__ import annotations

from collections.abc import Iterable


class DgnamError(Exception):
    """A user mistake; the message is one line that names the bad value (and the valid choices)."""

    def __str__(self) -> str:  # always one line, whatever the message was built from
        return " ".join(part.strip() for part in super().__str__().splitlines() if part.strip())


class DgnamValueError(DgnamError, ValueError):
    """A bad value: a name, a number, an option, or a file whose contents are not what they must be."""


class DgnamFileNotFoundError(DgnamError, FileNotFoundError):
    """A file or folder the user named does not exist."""

    def __str__(self) -> str:  # OSError's own __str__ would print "(None, None)" parts
        return DgnamError.__str__(self)


class NonFiniteError(DgnamValueError):
    """A loss, activation or image became NaN or infinite at ``step`` for the batch items ``items``."""

    def __init__(self, message: str, step: int | None = None, items: list[int] | None = None,
                 what: str = "") -> None:
        super().__init__(message)
        self.step, self.items, self.what = step, list(items or []), what


class RunDirInUseError(DgnamError, RuntimeError):
    """A run folder that another dgnam process holds (its lock file is taken)."""


def choices(values: Iterable[object], limit: int = 40) -> str:
    """Format valid choices for an error message, shortening very long lists."""
    vals = [str(v) for v in values]
    if len(vals) > limit:
        head = ", ".join(vals[: limit // 2])
        tail = ", ".join(vals[-limit // 4 :])
        return f"{head}, ... ({len(vals) - limit // 2 - limit // 4} more) ..., {tail}"
    return ", ".join(vals)


def first_line(e: object, limit: int = 600) -> str:
    """What a library said (an exception's message; its type name if empty) as one line: its lines
    joined, whole, so that the reason is never cut in the middle of a sentence. Only a message longer
    than ``limit`` characters (a dump of a state_dict's keys) is shortened, after its last full
    sentence or clause within the limit."""
    text = " ".join(ln.strip() for ln in str(e).strip().splitlines() if ln.strip()) or type(e).__name__
    if len(text) <= limit:
        return text
    cut = max(text.rfind(sep, 0, limit) for sep in (". ", "; ", ": ", ", "))
    return (text[: cut + 1] if cut > limit // 3 else text[:limit].rsplit(" ", 1)[0]) + " …"
