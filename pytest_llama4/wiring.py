"""Plan + settings + launcher -> every service's command, in start order: the engines' argv, wired together
(control plane, discovery, ports, addresses). The engines stay pure; the resolved configs land in the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .engines import control_plane, dynamo_mocker, dynamo_trtllm
from .engines.base import Command
from .engines.control_plane import Discovery
from .fixture_model import ensure_model_dir
from .launchers.base import Launcher
from .settings import Settings
from .topology import ETCD, NATS, Plan, Service


class WiringError(Exception):
    """The settings cannot be turned into a deployment for this engine."""


@dataclass
class Wiring:
    commands: dict[Service, Command]  # in start order
    ports: dict[Service, int]  # services that must accept connections before the next ones start


def wire(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, scratch: Path,
         configs_dir: Path) -> Wiring:
    wiring = Wiring({}, {})
    discovery = _discovery(plan, launcher, scratch, wiring)
    if settings.engine == "mocker":
        _mocker(plan, settings, launcher, http_port, discovery, configs_dir, wiring)
    elif settings.engine == "dynamo-trtllm":
        _dynamo_trtllm(plan, settings, launcher, http_port, discovery, wiring)
    else:
        raise WiringError(f"launching --engine={settings.engine} is not wired yet; start it with the seed guide's "
                          "trtllm-serve command and pass --endpoint=http://HEAD_NODE:8000 --engine=trtllm-serve")
    return wiring


def _discovery(plan: Plan, launcher: Launcher, scratch: Path, wiring: Wiring) -> Discovery:
    """etcd + NATS as steps on the head node (on ports of our choosing), or a shared discovery directory."""
    if plan.discovery == "file":
        return control_plane.file_discovery(scratch / "discovery")
    by_role = {s.role: s for s in plan.services}
    etcd_port, peer_port, nats_port = (launcher.allocate_port() for _ in range(3))
    wiring.commands[by_role[ETCD]] = control_plane.etcd_command(launcher.host, etcd_port, peer_port, scratch / "etcd")
    wiring.commands[by_role[NATS]] = control_plane.nats_command(launcher.host, nats_port, scratch / "nats")
    wiring.ports |= {by_role[ETCD]: etcd_port, by_role[NATS]: nats_port}
    return control_plane.etcd_discovery(launcher.host, etcd_port, nats_port)


def _mocker(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery,
            configs_dir: Path, wiring: Wiring) -> None:
    wiring.commands[plan.frontend] = dynamo_mocker.frontend_command(launcher.host, http_port, discovery)
    model_path = Path(settings.model) if settings.model else ensure_model_dir()
    configs_dir.mkdir(parents=True, exist_ok=True)
    for worker in plan.workers:
        engine_args_file = configs_dir / f"{worker.name}.json"
        engine_args_file.write_text(json.dumps(dynamo_mocker.engine_args(worker, settings.speedup_ratio), indent=2))
        wiring.commands[worker] = dynamo_mocker.worker_command(
            worker, model_path=model_path, served_model_name=settings.served_model_name,
            engine_args_file=engine_args_file, system_port=launcher.allocate_port(), discovery=discovery)


def _dynamo_trtllm(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery,
                   wiring: Wiring) -> None:
    """As the seed scripts run it. Engine configs and the model are paths as the container sees them.
    With etcd the seed relies on the workers' defaults; with file discovery the flags must say so (Dynamo 1.0+)."""
    flags = discovery.flags if discovery.env.get("DYN_FILE_KV") else ()
    frontend = dynamo_trtllm.frontend_command(http_port, discovery.env)
    wiring.commands[plan.frontend] = Command(frontend.argv + flags, frontend.env)
    for worker in plan.workers:  # settings guarantee each has its engine config
        command = dynamo_trtllm.worker_command(
            worker, model_path=settings.model or settings.served_model_name,
            served_model_name=settings.served_model_name, engine_config=str(worker.engine_config),
            gpus_per_node=settings.gpus_per_node, env=discovery.env, dynamo_version=settings.dynamo_version,
            system_port=launcher.allocate_port())
        wiring.commands[worker] = Command(command.argv + flags, command.env, command.tasks_per_node, command.mpi)
