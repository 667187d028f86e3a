"""A running deployment: started from a plan through a launcher, ready-checked, watched, and always stopped."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from ..config.settings import Settings
from ..config.topology import Plan, Service
from . import interrupts, readiness, services
from .detect import Detected, detect
from .engines import engine_for, waived_engine
from .engines.base import Command
from .launchers.base import Launcher, ServiceHandle
from .logtail import framed, tail
from .phases import Phase
from .wiring import Wiring, wire

STOP_GRACE_SECONDS = 10.0


class DeploymentError(Exception):
    """The deployment could not be brought up, or a service of it died; the message holds the evidence."""


@dataclass
class Deployment:
    settings: Settings
    plan: Plan | None  # None for an endpoint we did not launch
    base_url: str
    logs_dir: Path
    launcher: Launcher | None = None
    handles: list[ServiceHandle] = field(default_factory=list)
    scratch_dir: Path | None = None  # discovery store and control-plane data, removed on stop
    progress: Callable[[str], None] = field(default=print, repr=False)  # where progress lines go while it starts
    stopped: bool = False
    detected: Detected | None = None  # for an --endpoint: what the server says it is

    @property
    def waived_engine(self) -> str:
        """The engine whose known deviations apply: the one named, or the one an unnamed endpoint says it is."""
        return waived_engine(self.settings.engine, self.detected.engine if self.detected else None)

    @property
    def served_model(self) -> str:
        return self.settings.served_model_name

    @property
    def run_dir(self) -> Path:
        """Its report directory: logs/, engine_configs/ (the resolved configs the workers read), services.json."""
        return self.logs_dir.parent

    @property
    def services(self) -> list[services.ServiceRecord]:
        """What was launched for it (services.json): roles, nodes, logs, metrics ports; empty for an endpoint."""
        return services.read(self.run_dir) if self.plan is not None else []

    def hand_over(self) -> dict[str, Any]:
        """What another process (an xdist worker) needs to use this deployment: JSON values only."""
        return {"base_url": self.base_url, "launched": self.plan is not None, "logs_dir": str(self.logs_dir),
                "dynamo_version": self.settings.dynamo_version,
                "detected": dataclasses.astuple(self.detected) if self.detected else None}

    @classmethod
    def taken_over(cls, settings: Settings, handed: Mapping[str, Any]) -> Deployment:
        """The deployment another process launched, as `hand_over` described it: its address, plan and report,
        with the Dynamo release its preflight found; the launching process watches and stops it."""
        settings = dataclasses.replace(settings, dynamo_version=handed["dynamo_version"])
        detected = Detected(*handed["detected"]) if handed.get("detected") else None
        return cls(settings, settings.plan if handed["launched"] else None, handed["base_url"],
                   Path(handed["logs_dir"]), detected=detected)

    def phase(self, name: str, budget: float, option: str) -> Phase:
        """A startup phase starting now, reporting progress where this deployment does."""
        return Phase(name, budget, option, self.progress, self.settings.progress_interval)

    def describe(self) -> str:
        shape = self.plan.describe() if self.plan else "existing endpoint"
        return f"{self.settings.engine} {shape} at {self.base_url}, model {self.served_model}"

    def dead_services(self) -> list[ServiceHandle]:
        return [h for h in self.handles if h.returncode() is not None]

    def raise_if_died(self) -> None:
        """A service that exits while we rely on it is a failure, shown with its log tail."""
        dead = self.dead_services()
        if dead:
            details = "\n".join(
                f"{h.service.name} exited with status {h.returncode()}\n{framed(h.service.name, h.log_path)}"
                for h in dead)
            raise DeploymentError(f"deployment service(s) died: {', '.join(h.service.name for h in dead)}\n{details}")

    def stop(self) -> None:
        """Stop services in reverse start order (workers, frontend, control plane), then release what the
        launcher holds (an allocation it requested); safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        try:
            for handle in reversed(self.handles):
                try:
                    handle.stop(STOP_GRACE_SECONDS)
                except OSError:
                    continue  # one unstoppable service must not keep the others running
        finally:
            if self.launcher is not None:
                self.launcher.close()
            if self.scratch_dir is not None:
                shutil.rmtree(self.scratch_dir, ignore_errors=True)


def connect_endpoint(settings: Settings, logs_dir: Path, progress: Callable[[str], None] = print) -> Deployment:
    """Use a deployment someone else started: launch nothing, check it serves the model."""
    deployment = Deployment(settings, None, str(settings.endpoint).rstrip("/"), logs_dir, progress=progress)
    _wait_ready(deployment)
    deployment.detected = detect(deployment.base_url, deployment.served_model)
    return deployment


BeforeStart = Callable[[Settings, Plan, Wiring, Launcher], Settings]


def launch(settings: Settings, run_dir: Path, launcher: Launcher, before_start: BeforeStart | None = None,
           progress: Callable[[str], None] = print) -> Deployment:
    """Start every planned service, wait for readiness; on any failure stop what started, then raise.

    Logs go to `run_dir/logs/<service>.log`, the resolved engine configs to `run_dir/engine_configs/`,
    the discovery store to `run_dir/.scratch/` (the reports directory is usually on a filesystem every node sees).
    `before_start` (preflight) sees the wiring before anything starts; it raises to stop the launch, or returns the
    settings to run with (the Dynamo release it found), and the services are wired again for them on the same ports.
    `progress` gets a line every --progress-interval seconds while the deployment is not ready.
    """
    plan = settings.plan
    logs_dir = run_dir / "logs"
    run_dir.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(settings, plan, "", logs_dir, launcher=launcher, progress=progress,
                            scratch_dir=Path(tempfile.mkdtemp(prefix=".scratch-", dir=run_dir)))
    try:
        http_port = settings.http_port or launcher.allocate_port()  # preflight checks it is free where it binds
        deployment.base_url = f"http://{launcher.host}:{http_port}"
        wiring = wire(plan, settings, launcher, http_port, deployment.scratch_dir, run_dir / "engine_configs")
        if before_start is not None:
            settings = deployment.settings = before_start(settings, plan, wiring, launcher)
            wiring = wire(plan, settings, launcher, http_port, deployment.scratch_dir, run_dir / "engine_configs",
                          reuse_ports=wiring.taken)
        records = [_record(service, command, launcher, logs_dir) for service, command in wiring.commands.items()]
        services.write(run_dir, records)
        for index, (service, command) in enumerate(wiring.commands.items()):
            with interrupts.deferred():
                deployment.handles.append(launcher.start(service, command, logs_dir / f"{service.name}.log"))
            records[index] = dataclasses.replace(records[index], pid=deployment.handles[-1].pid)
            services.write(run_dir, records)  # a process group to look for, should anything outlive the run
            if service in wiring.ports:
                _wait_for_port(deployment, service, launcher.host, wiring.ports[service])
        _wait_ready(deployment)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _record(service: Service, command: Command, launcher: Launcher, logs_dir: Path) -> services.ServiceRecord:
    return services.ServiceRecord(
        service.name, service.role, launcher.node_names(service), launcher.node_address(service),
        str(logs_dir / f"{service.name}.log"), command.argv, services.redact(command.env), command.metrics_at,
        command.metrics_path)


def _wait_for_port(deployment: Deployment, service: Service, host: str, port: int) -> None:
    """etcd and NATS must accept connections before the frontend and workers start."""
    phase = deployment.phase("control plane", deployment.settings.control_plane_timeout, "--control-plane-timeout")
    while not phase.over():
        _raise_if_died_during_startup(deployment)
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            phase.tick(lambda: f"{service.name} is not listening on {host}:{port} yet")
            time.sleep(0.2)
    handle = next(h for h in deployment.handles if h.service == service)
    raise DeploymentError(f"{phase.timed_out(f'{service.name} is not listening on {host}:{port}')}\n"
                          f"{framed(service.name, handle.log_path)}")


def _wait_ready(deployment: Deployment) -> None:
    session = requests.Session()
    engine = engine_for(deployment.settings.engine)
    components = engine.health_components(deployment.settings.dynamo_version)
    lists_models = engine.lists_models(deployment.plan)
    phase = deployment.phase("worker load + readiness" if deployment.plan else "endpoint readiness",
                             deployment.settings.startup_timeout, "--startup-timeout")
    state = readiness.wait_until_ready(
        lambda time_left: readiness.check_once(session, deployment.base_url, deployment.plan,
                                               deployment.served_model, components, time_left, lists_models),
        phase, on_poll=lambda: _raise_if_died_during_startup(deployment),
        describe=lambda state: _progress_detail(deployment, state))
    if not state.ready:
        raise DeploymentError(_timeout_message(deployment, phase, state))


def _progress_detail(deployment: Deployment, state: readiness.Readiness) -> str:
    """What a person watching a long model load wants to know besides the time: which workers registered, what is
    still missing, and what each service still waited for last said."""
    parts = [f"registered: {', '.join(state.registered)}"] if state.registered else []
    parts.append(f"waiting for: {'; '.join(state.missing) or 'the first answer'}")
    lines = ["; ".join(parts)]
    blamed = readiness.roles_to_blame(state, [h.service.role for h in deployment.handles])
    lines += [f"  {h.service.name}: {tail(h.log_path, 1)[:200]}" for h in deployment.handles
              if h.service.role in blamed]
    return "\n".join(lines)


def _raise_if_died_during_startup(deployment: Deployment) -> None:
    interrupts.raise_if_received()
    try:
        deployment.raise_if_died()
    except DeploymentError as error:
        raise DeploymentError(f"deployment failed before it was ready: {error}") from None


def _timeout_message(deployment: Deployment, phase: Phase, state: readiness.Readiness) -> str:
    lines = [phase.timed_out(deployment.describe()), *(f"  missing: {m}" for m in state.missing)]
    blamed = readiness.roles_to_blame(state, [h.service.role for h in deployment.handles])
    lines += [framed(h.service.name, h.log_path) for h in deployment.handles if h.service.role in blamed]
    return "\n".join(lines)
