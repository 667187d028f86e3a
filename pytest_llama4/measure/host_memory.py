"""Host memory of every service of a run: resident set size (RSS) summed over each service's processes, per node.

Processes are found by the labels every launched process carries (`PYTEST_LLAMA4_RUN=<run id>`,
`PYTEST_LLAMA4_SERVICE=<service>`, see launchers/local.py), never by launcher handles: under pytest-xdist the
controller hosts the deployment and a worker process has no handles, only the run id. Locally /proc is read in
this process; on SLURM one helper step per node (`Launcher.run_on_nodes`: `srun --overlap`) streams what /proc
shows there (procscan.py).

RSS counts pages shared between a service's processes once per process, so the sum errs on the high side:
right for a limit that must not be crossed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from ..deploy import procscan
from ..deploy import services as service_records
from ..deploy.launchers.allocation import SlurmError
from ..deploy.launchers.base import Launcher, NodeStep
from ..deploy.launchers.local import RUN_LABEL_ENV

MIB = 1024 * 1024
LOCAL_NODE = "local"
SAMPLER_ROLE = "host-memory"
NO_SERVICES_OF_OURS = ("--endpoint: this deployment was started by someone else, so its processes, logs and "
                       "worker metrics are not ours to read")
T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class ServiceMemory:
    service: str
    node: str
    rss_bytes: int
    pids: tuple[int, ...]


class ProcessSource(Protocol):
    run_id: str

    def read(self) -> list[ServiceMemory]:
        """The run's live services now: one entry per (service, node)."""

    def close(self) -> None: ...


def _group(node_procs: dict[str, list[list]], services: frozenset[str]) -> list[ServiceMemory]:
    """Per (service, node) sums; labelled processes that are no service of the deployment (helper steps such as
    this module's own sampler) are left out."""
    totals: dict[tuple[str, str], list] = {}
    for node, procs in node_procs.items():
        for pid, service, rss in procs:
            if service not in services:
                continue
            entry = totals.setdefault((service, node), [0, []])
            entry[0] += rss
            entry[1].append(pid)
    return [ServiceMemory(service, node, rss, tuple(sorted(pids))) for (service, node), (rss, pids) in
            sorted(totals.items())]


@dataclass
class LocalProcesses:
    """The run's processes on this machine."""

    run_id: str
    services: frozenset[str]
    _scanner: procscan.Scanner | None = None

    def read(self) -> list[ServiceMemory]:
        self._scanner = self._scanner or procscan.Scanner(self.run_id)
        return _group({LOCAL_NODE: self._scanner.scan()}, self.services)

    def close(self) -> None:
        """Nothing held."""


@dataclass
class SlurmProcesses:
    """The run's processes on the nodes its services run on: one streaming helper step per node (an `srun
    --overlap` step), each printing what /proc shows there every `interval` seconds. It runs python3 on the node
    outside any container: the host's /proc shows the containers' processes too."""

    runner: Launcher
    run_id: str
    services: frozenset[str]
    nodes: tuple[str, ...]
    interval: float = 0.5
    first_reading_timeout: float = 60.0
    _steps: list[NodeStep] = field(default_factory=list)
    _latest: dict[str, list[list]] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, node: str) -> tuple[str, ...]:
        return ("python3", "-c", Path(procscan.__file__).read_text(), self.run_id, node, str(self.interval))

    def step_name(self, node: str) -> str:
        """Labelled like every step of the run (a leaked one is traced to it), and left out of the readings, as it
        is no service; the pid: xdist workers never cancel each other's steps."""
        return f"{SAMPLER_ROLE}-{os.getpid()}-{node}"

    def start(self) -> None:
        """Started from the calling thread, which the steps are tied to (Launcher.run_on_nodes)."""
        for node in self.nodes:
            self._steps.append(self.runner.run_on_nodes(self.command(node), (node,), name=self.step_name(node),
                                                        follow=functools.partial(self._follow, node)))

    def _follow(self, node: str, step: NodeStep) -> None:
        for line in step.stdout:
            with contextlib.suppress(ValueError, KeyError):
                procs = json.loads(line)["procs"]
                with self._lock:
                    self._latest[node] = procs
        if node not in self._latest:
            self._errors[node] = f"srun exited {step.process.wait()}: {step.stderr().strip()[-500:]}"

    def read(self) -> list[ServiceMemory]:
        if not self._steps:
            self.start()
        deadline = time.monotonic() + self.first_reading_timeout
        while missing := [n for n in self.nodes if n not in self._latest]:
            failed = {n: self._errors[n] for n in missing if n in self._errors}
            if failed or time.monotonic() > deadline:
                raise SlurmError(f"no process reading from node(s) {', '.join(missing)}: {failed or 'timed out'}")
            time.sleep(0.05)
        with self._lock:
            return _group(dict(self._latest), self.services)

    def close(self) -> None:
        """Stop each step as the launcher stops every step, and wait until it is gone."""
        for step in self._steps:
            step.stop()
        self._steps.clear()


def run_label(source: ProcessSource) -> str:
    """The environment label the source finds the run's processes by, as a person would grep for it."""
    return f"{RUN_LABEL_ENV}={source.run_id}"


def process_source(runner: Launcher | None, run_dir: Path, services: frozenset[str]) -> ProcessSource | str:
    """How to read the processes of these services of the run in run_dir (reports/<run-id>), where `runner` runs
    it (None: an --endpoint), or why they cannot be read (a skip reason)."""
    if runner is None:
        return NO_SERVICES_OF_OURS
    run_id = run_dir.name
    if runner.runs_here:
        return LocalProcesses(run_id, services)
    used = {node for record in service_records.read(run_dir) for node in record.nodes}
    return SlurmProcesses(runner, run_id, services, tuple(n for n in runner.nodes if n in used) or runner.nodes)


def sample_during(work: Callable[[], T], read: Callable[[], S], interval: float) -> tuple[T, list[S]]:
    """Run `work()` here while a thread calls `read()` every `interval` seconds: once before the work starts,
    then periodically, then once after it ended (so even a short load gets a reading under way or at its end).
    An exception from `read` is raised here after the work."""
    samples: list[S] = [read()]
    done = threading.Event()
    failure: list[BaseException] = []

    def loop() -> None:
        while not done.wait(interval):
            try:
                samples.append(read())
            except Exception as error:  # re-raised in the caller's thread
                failure.append(error)
                return

    sampler = threading.Thread(target=loop, name="llama4-sampler", daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    if failure:
        raise failure[0]
    samples.append(read())
    return result, samples


# ---------------------------------------------------------------------------------------------------- limits


def peaks(samples: list[list[ServiceMemory]]) -> dict[tuple[str, str], int]:
    """The highest RSS each (service, node) reached over the samples."""
    highest: dict[tuple[str, str], int] = {}
    for sample in samples:
        for usage in sample:
            key = (usage.service, usage.node)
            highest[key] = max(highest.get(key, 0), usage.rss_bytes)
    return highest


def role_of(service: str) -> str:
    """`worker-0` -> `worker`, `prefill-1` -> `prefill`."""
    return service.rsplit("-", 1)[0]


def limit_mib(service: str, limits: dict[str, float]) -> float | None:
    """The profile's `memory.host_rss_mib` entry for this service's role, else its `default`."""
    value = limits.get(role_of(service), limits.get("default"))
    return None if value is None else float(value)


@dataclass(frozen=True)
class RssRow:
    service: str
    node: str
    peak_mib: float
    limit_mib: float | None

    @property
    def ok(self) -> bool:
        return self.limit_mib is None or self.peak_mib <= self.limit_mib


def rows(highest: dict[tuple[str, str], int], limits: dict[str, float]) -> list[RssRow]:
    return [RssRow(service, node, rss / MIB, limit_mib(service, limits))
            for (service, node), rss in sorted(highest.items())]


def table(entries: list[RssRow]) -> str:
    lines = [f"{'service':<14} {'node':<12} {'peak MiB':>10} {'limit MiB':>10}  verdict"]
    for row in entries:
        limit = "none" if row.limit_mib is None else f"{row.limit_mib:.0f}"
        lines.append(f"{row.service:<14} {row.node:<12} {row.peak_mib:>10.1f} {limit:>10}  "
                     f"{'ok' if row.ok else 'OVER'}")
    return "\n".join(lines)
