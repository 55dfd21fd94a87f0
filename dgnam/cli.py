"""Glue for the Hydra entry scripts: the run directory, one-line errors, no partial outputs."""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dgnam.errors import DgnamError, DgnamValueError, choices, first_line


def run_dir() -> Path:
    """The Hydra run directory of the current job (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path.cwd()


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def quiet_full_disk_in_threads() -> None:
    """A full disk in a writer thread (TensorBoard's event writer) is re-raised by its owner in the
    main thread, where it becomes one line; the thread's own traceback is not printed."""
    default = threading.excepthook
    if getattr(default, "dgnam_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in FULL_DISK:
            return
        default(args)

    hook.dgnam_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _exit_on_user_error(fn: Callable[..., Any], cleanup: Callable[[], None] | None = None) -> Callable[..., Any]:
    """``fn`` wrapped so that a :class:`DgnamError` runs ``cleanup``, prints ``error: <message>`` on
    one line and exits with status 2; a full disk prints one line and exits with 2 (what was written
    stays); Ctrl-C prints ``interrupted`` and exits with 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_full_disk_in_threads()
        try:
            return fn(*args, **kwargs)
        except DgnamError as e:
            if cleanup is not None:
                cleanup()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            if e.errno not in FULL_DISK:
                raise
            where = e.filename or f"under {run_dir()}"
            print(f"error: cannot write {where}: {os.strerror(e.errno)} (disk full?); files already written "
                  f"(checkpoints, logs) are kept", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def _remove_failed_run_dir() -> None:
    """Undo what a failed command did to its run folder: the folder claimed by :func:`launch` is
    restored or removed (:func:`dgnam.rundirs.abandon`); without a claim (a Hydra app called another
    way), the run directory Hydra created is removed when it holds nothing but Hydra's own files."""
    from dgnam import rundirs

    if rundirs.current() is not None:
        rundirs.abandon()
        return
    out = run_dir()
    if (out / ".hydra").is_dir():
        rundirs.remove_if_only_hydra(out)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra main: a :class:`DgnamError` prints ``error: <message>`` on one line, undoes what
    the command did to its run folder (no half-written outputs, an earlier run's files as they were)
    and exits with status 2; any other failure undoes it too and keeps its traceback. A job of a
    multirun under the basic launcher runs as a command of its own (:mod:`dgnam.sweeps`)."""
    from dgnam import rundirs, sweeps

    inner = _exit_on_user_error(fn, _remove_failed_run_dir)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if sweeps.isolated():
            return sweeps.run_job_process()
        try:
            out = inner(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            _remove_failed_run_dir()
            raise
        rundirs.finish()
        return out

    return wrapper


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the ``main`` of a ``python -m dgnam...`` command: a :class:`DgnamError` prints
    ``error: <message>`` on one line and exits with status 2 (no Hydra run directory to clean)."""
    return _exit_on_user_error(fn)


# Flags of a Hydra app that take no value; with any other flag the check below leaves the command
# line to Hydra.
_PLAIN_FLAGS = ("-m", "--multirun")


def check_overrides(conf_dir: str | os.PathLike, config_name: str, argv: list[str]) -> None:
    """Compose the config once, as Hydra is about to, and turn what would be Hydra's multi-line
    report into one line and exit status 2: a mistyped key (``objectiv=logit``, ``output.pgn=false``:
    the closest keys), an unknown option of a group (``method=lucidd``: the closest and the valid
    ones), an override that does not parse, and a run directory that cannot be created. Sweeps are
    checked with their first value. Nothing is written."""
    if any(a.startswith("-") and a not in _PLAIN_FLAGS for a in argv):
        return None
    return one_line_errors(_check_command_line)(conf_dir, config_name, argv)


def _check_command_line(conf_dir: str | os.PathLike, config_name: str, argv: list[str]) -> Any:
    multirun = any(a in _PLAIN_FLAGS for a in argv)
    overrides = _first_of_each_sweep([a for a in argv if a not in _PLAIN_FLAGS], Path(conf_dir))
    cfg = _compose(conf_dir, config_name, overrides)
    _check_run_dir(cfg, multirun)
    return cfg


def _other_rank() -> bool:
    """Whether this process is a rank other than 0 of a distributed run (Lightning's DDP starts the
    same command again per rank; torchrun and SLURM set the rank): rank 0 holds the run folder."""
    return any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "NODE_RANK"))


def launch(main: Callable[[], Any], conf_dir: str | os.PathLike, config_name: str) -> None:
    """Run the Hydra app ``main`` on ``sys.argv``, after :func:`check_overrides`, with its run folder
    claimed before Hydra writes into it (:mod:`dgnam.rundirs`: a lock, and an earlier run's files
    kept as they were if the command fails) and, for a sweep, every job run as a command of its own
    with the failed ones listed at the end (:mod:`dgnam.sweeps`)."""
    from dgnam import rundirs, sweeps
    from dgnam.sweeps import quoted

    argv = sys.argv[1:]
    cfg = check_overrides(conf_dir, config_name, argv)
    if cfg is None:  # --help, --cfg ...: Hydra's own
        main()
        return
    multirun = any(a in _PLAIN_FLAGS for a in argv)
    path = _planned_dir(cfg, multirun)
    if path is None:  # not resolvable before the run: Hydra's own handling
        main()
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    pinned = [f"{key}={quoted(str(path))}"]  # the folder claimed is the one Hydra uses, whatever ${now:} says later
    if not multirun:
        if not _other_rank():
            one_line_errors(rundirs.claim)(path)
    elif str(OmegaConf.select(cfg, "hydra.launcher._target_", default="")) == sweeps.BASIC:
        pinned.append("hydra.output_subdir=null")  # each job's own command writes its .hydra/
    sys.argv[1:] = [a for a in argv if not a.startswith(f"{key}=")] + pinned
    main()
    if multirun:
        sweeps.finish(path)


def _first_of_each_sweep(args: list[str], conf_dir: Path) -> list[str]:
    """Each sweep override reduced to its first value; every value of a sweep over a config group
    (``method=pixel,lucidd``) is checked against the group's files."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    out = []
    for arg in args:
        try:
            (o,) = OverridesParser.create().parse_overrides([arg])
        except OverrideParseException as e:
            raise DgnamValueError(f"cannot parse override {arg!r}: {first_line(e)}") from None
        if not o.is_sweep_override():
            out.append(arg)
            continue
        group = conf_dir / o.key_or_group
        if group.is_dir():
            valid = sorted(f.stem for f in group.glob("*.yaml"))
            for value in o.sweep_string_iterator():
                if value not in valid:
                    close = difflib.get_close_matches(value, valid, n=3, cutoff=0.5)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    raise DgnamValueError(f"unknown {o.key_or_group} {value!r}{hint}; valid: {', '.join(valid)}")
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(o.type, "")
        key = o.key_or_group + (f"@{o.package}" if o.package else "")
        out.append(f"{prefix}{key}={next(iter(o.sweep_string_iterator()))}")
    return out


def _compose(conf_dir: str | os.PathLike, config_name: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            try:
                return compose(config_name, overrides=overrides, return_hydra_config=True)
            except Exception as e:
                raise DgnamValueError(_explain(e, lambda: compose(config_name, return_hydra_config=True))) from None
    finally:
        GlobalHydra.instance().clear()


def _explain(e: Exception, base: Callable[[], Any]) -> str:
    """One line for a composition error: the bad key or option and the closest valid ones."""
    text = "\n".join(str(x) for x in _chain(e))
    missing_key = re.search(r"Key '([^']+)' is not in struct\s+full_key: (\S+)", text)
    if missing_key:
        from omegaconf import OmegaConf

        full = missing_key.group(2)
        parent, _, leaf = full.rpartition(".")
        try:
            node = base()
            node = OmegaConf.select(node, parent) if parent else node
            keys = [str(k) for k in node.keys() if str(k) != "hydra"] if OmegaConf.is_dict(node) else []
        except Exception:
            keys = []
        close = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(f'{parent}.{k}' if parent else k for k in close)}?)" if close else ""
        where = f"keys of {parent}" if parent else "top-level keys"
        return f"unknown key {full!r}{hint}; {where}: {choices(keys, 30)}"
    missing_option = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing_option:
        group, name = missing_option.groups()
        block = text.split(f"Available options in '{group}':", 1)
        valid = []
        for ln in (block[1].splitlines()[1:] if len(block) > 1 else []):
            if not ln.startswith("\t"):
                break
            valid.append(ln.strip())
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown {group} {name!r}{hint}; valid: {', '.join(valid) if valid else '(none found)'}"
    full_key = re.search(r"full_key: (\S+)", text)
    last = [ln.strip() for ln in str(_chain(e)[-1]).splitlines() if ln.strip() and not ln.strip().startswith(
        ("full_key:", "object_type=", "reference_type="))]
    msg = " ".join(last) or type(e).__name__  # the reason, without OmegaConf's location lines
    not_bool = re.match(r"Value '(.*)' is not a valid bool", msg)
    if full_key and not_bool:
        return f"{full_key.group(1)}={not_bool.group(1)!r} must be true or false"
    return f"{full_key.group(1)}: {msg}" if full_key else msg


def _chain(e: BaseException) -> list[BaseException]:
    out = [e]
    while out[-1].__cause__ is not None and len(out) < 10:
        out.append(out[-1].__cause__)
    return out


def _planned_dir(cfg: Any, multirun: bool) -> Path | None:
    """The run (or sweep) directory Hydra is about to create; None when it cannot be resolved before
    the run (Hydra then has its own say)."""
    try:
        return Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    except Exception:
        return None


def _check_run_dir(cfg: Any, multirun: bool) -> None:
    """The run (or sweep) directory Hydra is about to create must be creatable."""
    path = _planned_dir(cfg, multirun)
    if path is None:
        return
    anc = path if path.is_absolute() else Path.cwd() / path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DgnamValueError(f"cannot create the run directory {path}: {anc} is not a directory (hydra.run.dir=...)")
    try:
        probe = tempfile.mkdtemp(prefix=".dgnam-probe-", dir=anc)
        os.rmdir(probe)
    except OSError as e:
        raise DgnamValueError(f"cannot create the run directory {path} under {anc}: {e.strerror or first_line(e)} "
                         f"(set hydra.run.dir=<a writable folder>)") from None
