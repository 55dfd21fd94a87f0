"""Sweeps (``-m``) that run every job they can.

Under Hydra's basic launcher every job of a multirun runs in the same process, so one job's error
(or a kill) would end the sweep. dgnam runs each job as a command of its own instead: the same
script, the job's overrides, ``hydra.run.dir=<the job's folder>``. A job that fails is reported in
one line and the sweep goes on; at the end, each failed job is listed with its overrides and the
sweep exits with status 1. A job that wrote nothing leaves no folder; a sweep in which nothing ran
leaves none either.

Run a sweep again with the same overrides and ``hydra.sweep.dir=<its folder>``: the jobs that
finished (their folder's ``.dgnam-run`` says ``finished``, :mod:`dgnam.rundirs`) are skipped, untouched,
and only the failed or missing ones run. Other launchers (``hydra/launcher=local_parallel``,
``slurm_gpu``) already run jobs in processes of their own and are left as they are.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dgnam.rundirs import remove_if_only_hydra, state_of


@dataclass
class Failure:
    num: int
    overrides: str
    reason: str


FAILED: list[Failure] = []
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def quoted(value: str) -> str:
    """A value as a Hydra override reads it back unchanged (quoted when it holds more than a plain path)."""
    if re.fullmatch(r"[\w./:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def isolated() -> bool:
    """Whether this call is a job of a multirun under the basic (in-process) launcher."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return hc.mode == RunMode.MULTIRUN and str(hc.launcher.get("_target_", "")) == BASIC
    except Exception:
        return False


def _reason(rc: int, tail: bytes) -> str:
    """What ended a job: its ``error:`` line, the signal that killed it, or its exit status."""
    lines = [ln.strip() for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    err = next((ln for ln in reversed(lines) if ln.startswith("error:")), None)
    if err:
        return err[len("error:"):].strip()
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}" + (f": {lines[-1]}" if lines else "")


def _overrides_of(job_dir: Path) -> list[str] | None:
    """The overrides a finished job ran with (its ``.hydra/overrides.yaml``)."""
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:
        return None


def run_job_process() -> None:
    """Run this multirun job as a command of its own (see the module docstring), recording a failure."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    job_dir, num = Path(hc.runtime.output_dir), int(hc.job.num)
    overrides = list(hc.overrides.task)
    label = " ".join(overrides) or "(no overrides)"
    if state_of(job_dir) == "finished":
        done = _overrides_of(job_dir)
        if done == overrides:
            print(f"job {num} ({label}) finished earlier: skipped", file=sys.stderr)
            return
        FAILED.append(Failure(num, label, f"its folder {job_dir} holds a finished run of other overrides "
                                          f"({' '.join(done or [])}); give this sweep its own hydra.sweep.dir"))
        print(f"job {num} ({label}) failed: {FAILED[-1].reason}", file=sys.stderr)
        return
    cmd = [sys.executable, sys.argv[0], *overrides, f"hydra.run.dir={quoted(str(job_dir))}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    tail = b""
    assert proc.stderr is not None
    try:
        while True:  # the job's messages and progress bars as they come, its last lines kept
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            tail = (tail + chunk)[-8192:]
        rc = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the job too (one process group): it saves what it can
        proc.wait()
        remove_if_only_hydra(job_dir)
        print(f"interrupted during job {num} ({label}); the same command with hydra.sweep.dir="
              f"{quoted(str(job_dir.parent))} runs the jobs not finished", file=sys.stderr)
        sys.exit(130)
    if rc != 0:
        FAILED.append(Failure(num, label, _reason(rc, tail)))
        print(f"job {num} ({label}) failed: {FAILED[-1].reason}", file=sys.stderr)
        remove_if_only_hydra(job_dir)


def finish(sweep_dir: Path | None) -> None:
    """After a multirun: the failed jobs in one line each and exit status 1; a sweep folder that
    holds nothing but ``multirun.yaml`` is removed."""
    if sweep_dir is not None and sweep_dir.is_dir() and all(p.name == "multirun.yaml" for p in sweep_dir.iterdir()):
        (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        remove_if_only_hydra(sweep_dir)
    if not FAILED:
        return
    print(f"error: {len(FAILED)} job(s) of the sweep failed:", file=sys.stderr)
    for f in FAILED:
        print(f"  job {f.num} ({f.overrides}): {f.reason}", file=sys.stderr)
    again = f" hydra.sweep.dir={sweep_dir}" if sweep_dir is not None else ""
    print(f"run the same command again with{again} to run only the failed jobs (finished ones are skipped)",
          file=sys.stderr)
    sys.exit(1)
