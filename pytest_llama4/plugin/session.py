"""Where a run's report goes, and the short terminal summary that points at it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..config.settings import Settings
from ..deploy.deployment import Deployment
from ..deploy.launchers import find_allocation, node_runner
from ..deploy.launchers.allocation import Allocation
from ..deploy.launchers.base import Launcher
from ..measure.profiles import Profile
from ..measure.results import FILE as PERF_FILE
from ..measure.results import AcceptanceResult, PerfDocument, ScenarioResult
from .xdist import SharedDeploymentHost


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs: 20261124-203000-1a2b."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


ACCEPTANCE_PART = ".acceptance.json"  # the speculative suite's measurement, until perf.json is written


@dataclass
class Run:
    """One pytest session's report directory, settings and (once started) deployment."""

    settings: Settings
    run_id: str
    deployment: Deployment | None = None
    allocation: Allocation | None = None  # the SLURM allocation pytest runs inside, checked at configure time
    startup_seconds: float | None = None
    junit_path: Path | None = None
    suites: list[str] = field(default_factory=list)  # suite markers of the collected tests
    profile: Profile | None = None
    outcomes: list[dict] = field(default_factory=list)  # one entry per test, for the summary page
    unreachable: str | None = None  # set once the deployment stops answering: later tests fail fast
    shared_host: SharedDeploymentHost | None = None  # xdist controller: the deployment it hosts for workers
    header: list[str] = field(default_factory=list)  # provenance: what the run ran on, atop the summary
    notes: list[str] = field(default_factory=list)  # replay: what was replayed and selected

    def record_perf(self, result: ScenarioResult) -> None:
        """One measured scenario, kept as its own file so every xdist worker can add to the same run."""
        parts = self.run_dir / ".perf"
        parts.mkdir(parents=True, exist_ok=True)
        (parts / f"{time.monotonic_ns()}-{os.getpid()}.json").write_text(json.dumps(result.to_dict()))

    def record_acceptance(self, result: AcceptanceResult) -> None:
        """The speculative suite's acceptance measurement, for perf.json (from whichever process measured it)."""
        (self.run_dir / ACCEPTANCE_PART).write_text(json.dumps(result.to_dict()))

    def write_perf(self) -> PerfDocument | None:
        """reports/<run-id>/perf.json (what --baseline reads next time), from every recorded scenario and the
        acceptance measurement."""
        parts = sorted((self.run_dir / ".perf").glob("*.json"), key=lambda p: int(p.name.split("-")[0]))
        acceptance = self.run_dir / ACCEPTANCE_PART
        if not parts and not acceptance.is_file():
            return None
        perf = PerfDocument(
            run_id=self.run_id, settings=self.settings.as_properties(),
            deployment=self.deployment.describe() if self.deployment else None,
            profile=self.profile.name if self.profile else None,
            scenarios=tuple(ScenarioResult.from_dict(json.loads(p.read_text()), p.name) for p in parts),
            speculative=AcceptanceResult.from_dict(json.loads(acceptance.read_text())) if acceptance.is_file()
            else None)
        perf.write(self.run_dir / PERF_FILE)
        shutil.rmtree(self.run_dir / ".perf", ignore_errors=True)
        acceptance.unlink(missing_ok=True)
        return perf

    def slurm_allocation(self) -> Allocation | None:
        """The run's SLURM job: the one pytest runs inside, the one the launcher requested (--slurm-alloc, on the
        controller), or, in an xdist worker of a --slurm-alloc run, the job the controller requested under the
        run's name. None outside SLURM."""
        if self.allocation is not None:
            return self.allocation
        if self.deployment is not None and self.deployment.launcher is not None:
            return self.deployment.launcher.allocation
        return find_allocation(self.settings, self.run_id)

    def node_runner(self) -> Launcher | None:
        """What runs helper steps (telemetry, host memory) on the deployment's nodes, in any process of the run;
        None for an --endpoint. ValueError when a SLURM run's allocation cannot be found."""
        return node_runner(self.settings, self.run_id, self.slurm_allocation())

    @property
    def run_dir(self) -> Path:
        return self.settings.reports_dir / self.run_id

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def summary_lines(self) -> list[str]:
        lines = [*self.header, *self.notes]
        if self.deployment is not None:
            lines.append(f"deployment: {self.deployment.describe()}")
            if self.deployment.detected is not None:
                lines.append(f"detected: {self.deployment.detected.description}"
                             + (f"; --engine={self.deployment.waived_engine}'s known deviations apply"
                                if self.deployment.waived_engine != self.settings.engine else ""))
            if self.startup_seconds is not None:
                lines.append(f"ready after {self.startup_seconds:.1f}s (pytest start to deployment ready)")
            if self.settings.keep_deployment and self.deployment.handles:
                lines.append("kept running (--keep-deployment); to stop it:")
                lines += [f"  {h.describe()}" for h in self.deployment.handles]
        if self.unreachable:
            lines.append(f"the deployment {self.unreachable}; the tests after it failed without waiting for it")
        if self.suites:
            lines.append(f"suites: {', '.join(self.suites)}")
        if self.junit_path is not None:
            parts = ["junit.xml"] + [name for name in ("perf.json", "summary.html", "provenance.json", "logs/")
                                     if (self.run_dir / name).exists()]
            lines.append(f"report: {self.run_dir}/ ({', '.join(parts)})")
        return lines


RUN_KEY = pytest.StashKey[Run]()
STARTED_KEY = pytest.StashKey[float]()  # time.monotonic() at pytest_configure


def current_run(config: pytest.Config) -> Run:
    return config.stash[RUN_KEY]
