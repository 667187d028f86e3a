"""A running deployment: started from a plan through a launcher, ready-checked, watched, and always stopped."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from . import readiness
from .engines import dynamo_mocker
from .engines.base import Command
from .fixture_model import ensure_model_dir
from .launchers.base import Launcher, ServiceHandle
from .launchers.local import LocalLauncher
from .logtail import framed
from .ports import port_in_use
from .settings import Settings
from .topology import Plan, Service, make_plan

STOP_GRACE_SECONDS = 10.0


class DeploymentError(Exception):
    """The deployment could not be brought up, or a service of it died; the message holds the evidence."""


@dataclass
class Deployment:
    settings: Settings
    plan: Plan | None  # None for an endpoint we did not launch
    base_url: str
    logs_dir: Path
    handles: list[ServiceHandle] = field(default_factory=list)
    scratch_dir: Path | None = None  # private discovery store, removed on stop
    stopped: bool = False

    @property
    def served_model(self) -> str:
        return self.settings.served_model_name

    @property
    def launched(self) -> bool:
        return self.plan is not None

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
        """Stop services in reverse start order (workers before the frontend); safe to call twice."""
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
            if self.scratch_dir is not None:
                shutil.rmtree(self.scratch_dir, ignore_errors=True)


def connect_endpoint(settings: Settings, logs_dir: Path) -> Deployment:
    """Use a deployment someone else started: launch nothing, check it serves the model."""
    deployment = Deployment(settings, None, str(settings.endpoint).rstrip("/"), logs_dir)
    _wait_ready(deployment)
    return deployment


def launch(settings: Settings, run_dir: Path, launcher: Launcher | None = None) -> Deployment:
    """Start every planned service, wait for readiness; on any failure stop what started, then raise.

    Logs go to `run_dir/logs/<service>.log`, the resolved engine configs to `run_dir/engine_configs/`.
    """
    launcher = launcher or LocalLauncher(run_label=run_dir.name)
    plan = make_plan(settings.topology, prefill_workers=settings.prefill_workers,
                     decode_workers=settings.decode_workers, engine_config=settings.engine_config,
                     prefill_engine_config=settings.prefill_engine_config,
                     decode_engine_config=settings.decode_engine_config)
    http_port = _frontend_port(settings, launcher)
    logs_dir = run_dir / "logs"
    deployment = Deployment(settings, plan, f"http://{launcher.host}:{http_port}", logs_dir,
                            scratch_dir=Path(tempfile.mkdtemp(prefix="llama4-discovery-")))
    try:
        commands = _commands(plan, settings, launcher, http_port, deployment.scratch_dir, run_dir / "engine_configs")
        for service, command in commands.items():
            deployment.handles.append(launcher.start(service, command, logs_dir / f"{service.name}.log"))
        _wait_ready(deployment)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _frontend_port(settings: Settings, launcher: Launcher) -> int:
    if not settings.http_port:
        return launcher.allocate_port()
    if port_in_use(settings.http_port, launcher.host):
        raise DeploymentError(f"--http-port={settings.http_port}: the port is already in use on {launcher.host}; "
                              "stop what holds it (`ss -ltnp`) or pass --http-port=0 to pick a free port")
    return settings.http_port


def _commands(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery_dir: Path,
              configs_dir: Path) -> dict[Service, Command]:
    model_path = Path(settings.model) if settings.model else ensure_model_dir()
    commands = {plan.frontend: dynamo_mocker.frontend_command(http_port, discovery_dir)}
    configs_dir.mkdir(parents=True, exist_ok=True)
    for worker in plan.workers:
        engine_args_file = configs_dir / f"{worker.name}.json"
        engine_args_file.write_text(json.dumps(dynamo_mocker.engine_args(worker, settings.speedup_ratio), indent=2))
        commands[worker] = dynamo_mocker.worker_command(
            worker, model_path=model_path, served_model_name=settings.served_model_name,
            engine_args_file=engine_args_file, system_port=launcher.allocate_port(), discovery_dir=discovery_dir)
    return commands


def _wait_ready(deployment: Deployment) -> None:
    session = requests.Session()
    state = readiness.wait_until_ready(
        lambda time_left: readiness.check_once(session, deployment.base_url, deployment.plan,
                                               deployment.served_model, dynamo_mocker.HEALTH_COMPONENT, time_left),
        deployment.settings.startup_timeout,
        on_poll=lambda: _raise_if_died_during_startup(deployment),
    )
    if not state.ready:
        raise DeploymentError(_timeout_message(deployment, state))


def _raise_if_died_during_startup(deployment: Deployment) -> None:
    try:
        deployment.raise_if_died()
    except DeploymentError as error:
        raise DeploymentError(f"deployment failed before it was ready: {error}") from None


def _timeout_message(deployment: Deployment, state: readiness.Readiness) -> str:
    lines = [f"deployment not ready after {deployment.settings.startup_timeout:g}s "
             f"(--startup-timeout): {deployment.describe()}", *(f"  missing: {m}" for m in state.missing)]
    blamed = readiness.roles_to_blame(state, [h.service.role for h in deployment.handles])
    lines += [framed(h.service.name, h.log_path) for h in deployment.handles if h.service.role in blamed]
    return "\n".join(lines)
