"""Finding and cancelling what a dead run left on SLURM: its steps, and the allocation --slurm-alloc requested.

A live run keeps a record of itself in the user's state directory (`runs/<run-id>.json`: host, pid, heartbeat,
renewed every HEARTBEAT_S by the process that launched the deployment) and names everything it creates after its
run id: the job `pytest-llama4-<run-id>`, the steps `llama4-<run-id>-<service>`. A job or step is reaped only when
both hold: its name carries a run id, and that run's record proves the run dead (its process is gone from this
host, or its heartbeat from another host is older than STALE_AFTER_S). A name without a record (another tool, a
colleague's run from a machine that shares nothing) is never touched; a run kept up with --keep-deployment is
left to its owner.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .allocation import SlurmError, slurm

HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0  # eight missed heartbeats: the controller on another host is gone
STATE_ENV = "PYTEST_LLAMA4_STATE"  # where run records live (default: ~/.local/state/pytest-llama4)
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")  # plugin/session.py new_run_id()
OUR_NAMES = re.compile(rf"^(?:pytest-llama4|llama4)-({RUN_ID.pattern})")


def state_dir() -> Path:
    base = os.environ.get(STATE_ENV) or Path.home() / ".local" / "state" / "pytest-llama4"
    return Path(base) / "runs"


@dataclass
class RunRecord:
    run_id: str
    host: str
    pid: int
    heartbeat: float
    kept: bool = False  # --keep-deployment: its steps outlive pytest on purpose

    @classmethod
    def read(cls, run_id: str, directory: Path) -> RunRecord | None:
        try:
            return cls(**json.loads((directory / f"{run_id}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{self.run_id}.json.tmp"
        temporary.write_text(json.dumps(asdict(self)))
        temporary.replace(directory / f"{self.run_id}.json")  # a reader never sees half a record

    def dead(self, here: str, now: float) -> str | None:
        """Why this run is over, or None while it may still be running."""
        if self.host == here:
            return None if _alive(self.pid) else f"its pytest (pid {self.pid} on {here}) is gone"
        age = now - self.heartbeat
        return f"no heartbeat from {self.host} for {age:.0f}s" if age > STALE_AFTER_S else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def heartbeat(run_id: str, kept: bool, directory: Path | None = None) -> Iterator[RunRecord]:
    """Keep this run's record fresh while the block runs; remove it when the block ends, unless the deployment is
    kept (a record left behind by a dead run is how `reap` knows it died)."""
    directory = directory or state_dir()
    record = RunRecord(run_id, socket.gethostname(), os.getpid(), time.time(), kept)
    record.write(directory)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            record.heartbeat = time.time()
            with contextlib.suppress(OSError):
                record.write(directory)

    thread = threading.Thread(target=beat, name=f"llama4-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join()
        if not kept:  # a kept deployment's record says whose its steps are
            (directory / f"{run_id}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class Leftover:
    slurm_id: str  # "123" (a job) or "123.4" (a step)
    name: str
    run_id: str
    why: str

    @property
    def is_step(self) -> bool:
        return "." in self.slurm_id

    def describe(self) -> str:
        return f"{'step' if self.is_step else 'job'} {self.slurm_id} ({self.name}) of run {self.run_id}: {self.why}"


def _listed(steps: bool) -> list[tuple[str, str]]:
    """(id, name) of the user's SLURM jobs, or steps."""
    out = slurm("squeue", "-h", *(["-s"] if steps else []), "-u", getpass.getuser(), "-o", "%i|%j")
    return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]  # type: ignore[misc]


def find(directory: Path | None = None) -> tuple[list[Leftover], list[str]]:
    """The user's jobs and steps of dead runs, and notes on those left alone (why each is not provably ours to
    cancel). Steps of a job that is itself a leftover go with the job."""
    directory = directory or state_dir()
    here, now = socket.gethostname(), time.time()
    found: list[Leftover] = []
    spared: list[str] = []
    for slurm_id, name in [*_listed(steps=False), *_listed(steps=True)]:
        match = OUR_NAMES.match(name)
        if not match or any(slurm_id.startswith(f"{job.slurm_id}.") for job in found):
            continue
        run_id = match.group(1)
        record = RunRecord.read(run_id, directory)
        why = record.dead(here, now) if record else None
        if record is None:
            spared.append(f"{slurm_id} ({name}): no record of run {run_id} in {directory}: not provably ours")
        elif record.kept:
            spared.append(f"{slurm_id} ({name}): run {run_id} was kept up (--keep-deployment); scancel it yourself")
        elif why:
            found.append(Leftover(slurm_id, name, run_id, why))
    return found, spared


def reap(leftovers: list[Leftover], directory: Path | None = None, grace: float = 10.0) -> list[str]:
    """Cancel each leftover and forget its run; one line per action. A step gets SIGTERM first and is cancelled
    (SIGKILL) if it is still there after `grace` seconds; a job is cancelled at once (SLURM sends its steps TERM,
    then KILL after its KillWait)."""
    directory = directory or state_dir()
    lines = []
    for leftover in leftovers:
        _scancel(*(["--signal=TERM"] if leftover.is_step else []), leftover.slurm_id)
        lines.append(f"cancelled {leftover.describe()}")
    deadline = time.monotonic() + grace
    while (remaining := _still_listed(leftovers)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for leftover in remaining:
        _scancel("--signal=KILL", leftover.slurm_id)
        _scancel(leftover.slurm_id)
        lines.append(f"killed {leftover.slurm_id} ({leftover.name}): still there {grace:g}s after TERM")
    for run_id in {leftover.run_id for leftover in leftovers}:
        (directory / f"{run_id}.json").unlink(missing_ok=True)
    return lines


def _scancel(*argv: str) -> None:
    with contextlib.suppress(SlurmError):  # gone meanwhile: nothing to cancel
        slurm("scancel", *argv)


def _still_listed(leftovers: list[Leftover]) -> list[Leftover]:
    listed = {slurm_id for slurm_id, _ in [*_listed(steps=False), *_listed(steps=True)]}
    return [leftover for leftover in leftovers if leftover.slurm_id in listed]


def forget_dead_runs(directory: Path | None = None) -> None:
    """Remove the records of dead runs that are not kept: once their jobs and steps are cancelled (or ended by
    themselves), nothing refers to them."""
    directory = directory or state_dir()
    here, now = socket.gethostname(), time.time()
    for path in directory.glob("*.json"):
        record = RunRecord.read(path.stem, directory)
        if record is not None and not record.kept and record.dead(here, now):
            path.unlink(missing_ok=True)
