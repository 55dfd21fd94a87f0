"""Glue for the Hydra entry scripts: the run directory, one-line errors, no partial outputs."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dgnam.errors import DgnamError


def run_dir() -> Path:
    """The Hydra run directory of the current job (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path.cwd()


def _only_hydra_files(out: Path) -> bool:
    """Whether ``out`` holds nothing but what Hydra writes for a job (``.hydra/`` and the job's log).

    A run directory given again (``hydra.run.dir=`` an earlier run, e.g. to resume training) holds
    earlier outputs; it is never removed."""
    return all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log") for p in out.iterdir())


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra main: a :class:`DgnamError` prints ``error: <message>`` on one line, removes the
    run directory that Hydra created for this job (no half-written outputs; a directory that already
    held other files is left as it was) and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DgnamError as e:
            out = run_dir()
            if (out / ".hydra").is_dir() and out.resolve() != Path.cwd().resolve() and _only_hydra_files(out):
                shutil.rmtree(out, ignore_errors=True)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the ``main`` of a ``python -m dgnam...`` command: a :class:`DgnamError` prints
    ``error: <message>`` on one line and exits with status 2 (no Hydra run directory to clean)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DgnamError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
