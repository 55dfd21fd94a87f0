"""Run folders that one process writes at a time, and that a failed command leaves as they were.

Before Hydra writes anything, the entry scripts (:func:`dgnam.cli.launch`) claim the run folder:

- a lock: ``<run>/.dgnam-run`` is held with ``flock`` for as long as the command runs (the kernel
  releases it when the process ends, however it ends); a second command into the same folder gets
  one line (:class:`~dgnam.errors.RunDirInUseError`) and writes nothing there. The file says
  ``running <pid>`` while a run is on and ``finished`` once it ended well, which is how a sweep run
  again (:mod:`dgnam.sweeps`) knows which jobs are done;
- a snapshot of what Hydra is about to rewrite in a folder that already holds a run (``.hydra/``
  and the job's ``.log``): if the command fails, they are put back byte for byte, so that a failed
  resume or rerun changes nothing of the earlier run. A folder the command created is removed again
  when it holds nothing but Hydra's own files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dgnam.errors import RunDirInUseError

STATE = ".dgnam-run"  # the lock, and whether the run in the folder finished


@dataclass
class Claim:
    """A run folder held by this process: its lock and what to put back if the command fails."""

    path: Path
    existed: bool  # the folder held files before this command
    fd: int
    snapshot: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, before the command


_CLAIM: Claim | None = None


def _hydra_files(path: Path) -> list[Path]:
    """The files Hydra (re)writes in a run folder: ``.hydra/*``, top-level ``*.log``, and the state file."""
    files = [p for p in (path / ".hydra").glob("*") if p.is_file()] if (path / ".hydra").is_dir() else []
    return files + [p for p in path.glob("*.log") if p.is_file()] + ([path / STATE] if (path / STATE).is_file() else [])


def state_of(path: Path) -> str:
    """``finished``, ``running`` (or a run that was killed), or ``""`` (no dgnam run here)."""
    try:
        return (path / STATE).read_text().split(" ", 1)[0].strip()
    except OSError:
        return ""


def claim(path: str | os.PathLike) -> Claim:
    """Lock ``path`` (created if needed) for this process and remember what a failure must restore;
    a folder another process holds is a one-line :class:`RunDirInUseError`."""
    global _CLAIM
    p = Path(path)
    existed = p.is_dir() and any(p.iterdir())
    p.mkdir(parents=True, exist_ok=True)
    snapshot = {str(f.relative_to(p)): f.read_bytes() for f in _hydra_files(p)}
    fd = os.open(p / STATE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        holder = (p / STATE).read_text().strip()
        raise RunDirInUseError(f"the run folder {p} is in use by another dgnam command ({holder or 'running'}); "
                               f"wait for it, or give this run its own folder: hydra.run.dir=<another folder>") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"running {os.getpid()}\n".encode(), 0)
    _CLAIM = Claim(p, existed, fd, snapshot)
    return _CLAIM


def current() -> Claim | None:
    """The run folder this process holds, if any."""
    return _CLAIM


def finish() -> None:
    """The command ended well: the folder's state says ``finished``; the lock is released."""
    global _CLAIM
    if _CLAIM is None:
        return
    os.ftruncate(_CLAIM.fd, 0)
    os.pwrite(_CLAIM.fd, b"finished\n", 0)
    os.close(_CLAIM.fd)
    _CLAIM = None


def only_hydra_files(path: Path) -> bool:
    """Whether ``path`` holds nothing but what Hydra and the lock write (``.hydra/``, logs, the state)."""
    return all(p.name in (".hydra", STATE) or (p.is_file() and p.suffix == ".log") for p in path.iterdir())


def remove_if_only_hydra(path: Path) -> bool:
    """Remove ``path`` and its empty parents (up to the working directory) when it holds only Hydra's files."""
    if not path.is_dir() or path.resolve() == Path.cwd().resolve() or not only_hydra_files(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    cwd, folder = Path.cwd().resolve(), path.resolve().parent
    while folder != cwd and cwd in folder.parents:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break
        folder = folder.parent
    return True


def abandon() -> None:
    """The command failed: a folder it created is removed when it holds only Hydra's files; an
    earlier run's folder gets back its ``.hydra/``, logs and state exactly as they were."""
    global _CLAIM
    c, _CLAIM = _CLAIM, None
    if c is None:
        return
    if c.existed:
        for f in _hydra_files(c.path):
            rel = str(f.relative_to(c.path))
            if rel not in c.snapshot and rel != STATE:
                f.unlink(missing_ok=True)
        for rel, data in c.snapshot.items():
            if rel != STATE:
                (c.path / rel).parent.mkdir(parents=True, exist_ok=True)
                (c.path / rel).write_bytes(data)
        os.ftruncate(c.fd, 0)
        os.pwrite(c.fd, c.snapshot.get(STATE, b""), 0)
        if STATE not in c.snapshot:
            (c.path / STATE).unlink(missing_ok=True)
        os.close(c.fd)
    else:
        os.close(c.fd)
        remove_if_only_hydra(c.path)
