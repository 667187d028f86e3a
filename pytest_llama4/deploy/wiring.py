"""Plan + settings + launcher -> every service's command, in start order: the engines' argv, wired together
(control plane, discovery, ports, addresses). The engines stay pure; the resolved configs land in the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config.settings import Settings
from ..config.topology import DECODE, ETCD, NATS, PREFILL, WORKER, Plan, Service
from .engines import control_plane, dynamo_mocker, dynamo_trtllm, trtllm_serve
from .engines.base import Command
from .engines.control_plane import Discovery
from .fixture_model import ensure_model_dir
from .launchers.base import Launcher


@dataclass
class Wiring:
    commands: dict[Service, Command] = field(default_factory=dict)  # in start order
    ports: dict[Service, int] = field(default_factory=dict)  # must accept connections before the next ones start
    listens: dict[Service, list[int]] = field(default_factory=dict)  # every port a service binds (on its first node)
    engine_configs: dict[Service, str] = field(default_factory=dict)  # the file each service reads, as it sees it
    model: str = ""  # the model path (or hub id) the workers load, as they see it
    taken: list[int] = field(default_factory=list)  # ports taken from the launcher, in order
    reused: list[int] = field(default_factory=list, repr=False)  # ports to hand out again before taking new ones

    def port_for(self, service: Service, launcher: Launcher) -> int:
        port = self.reused.pop(0) if self.reused else launcher.allocate_port()
        self.taken.append(port)
        self.listen(service, port)
        return port

    def listen(self, service: Service, port: int) -> None:
        self.listens.setdefault(service, []).append(port)


def wire(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, scratch: Path,
         configs_dir: Path, reuse_ports: Sequence[int] = ()) -> Wiring:
    """`reuse_ports`: an earlier wiring's `taken` ports, handed out again in the same order, so that re-wiring the
    same plan (for the Dynamo release preflight probed) keeps the ports preflight found free."""
    wiring = Wiring(reused=list(reuse_ports))
    if settings.engine == "trtllm-serve":  # its own servers and proxy: no Dynamo discovery
        _trtllm_serve(plan, settings, launcher, http_port, configs_dir, wiring)
        return wiring
    discovery = _discovery(plan, launcher, scratch, wiring)
    if settings.engine == "mocker":
        _mocker(plan, settings, launcher, http_port, discovery, configs_dir, wiring)
    else:
        _dynamo_trtllm(plan, settings, launcher, http_port, discovery, wiring)
    return wiring


def _discovery(plan: Plan, launcher: Launcher, scratch: Path, wiring: Wiring) -> Discovery:
    """etcd + NATS as steps on the head node (on ports of our choosing), or a shared discovery directory."""
    if plan.discovery == "file":
        return control_plane.file_discovery(scratch / "discovery")
    by_role = {s.role: s for s in plan.services}
    etcd, nats = by_role[ETCD], by_role[NATS]
    etcd_port, peer_port = wiring.port_for(etcd, launcher), wiring.port_for(etcd, launcher)
    nats_port = wiring.port_for(nats, launcher)
    wiring.commands[etcd] = control_plane.etcd_command(launcher.host, etcd_port, peer_port, scratch / "etcd")
    wiring.commands[nats] = control_plane.nats_command(launcher.host, nats_port, scratch / "nats")
    wiring.ports |= {etcd: etcd_port, nats: nats_port}
    return control_plane.etcd_discovery(launcher.host, etcd_port, nats_port)


def _mocker(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery,
            configs_dir: Path, wiring: Wiring) -> None:
    wiring.commands[plan.frontend] = dynamo_mocker.frontend_command(launcher.host, http_port, discovery)
    wiring.listen(plan.frontend, http_port)
    model_path = Path(settings.model) if settings.model else ensure_model_dir()
    wiring.model = str(model_path)
    configs_dir.mkdir(parents=True, exist_ok=True)
    for worker in plan.workers:
        engine_args_file = configs_dir / f"{worker.name}.json"
        engine_args_file.write_text(json.dumps(dynamo_mocker.engine_args(worker, settings.speedup_ratio), indent=2))
        wiring.engine_configs[worker] = str(engine_args_file)
        wiring.commands[worker] = dynamo_mocker.worker_command(
            worker, model_path=model_path, served_model_name=settings.served_model_name,
            engine_args_file=engine_args_file, system_port=wiring.port_for(worker, launcher), discovery=discovery)


def _dynamo_trtllm(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery,
                   wiring: Wiring) -> None:
    """As the seed scripts run it. Engine configs and the model are paths as the container sees them.
    With etcd the seed relies on the workers' defaults; with file discovery the flags must say so (Dynamo 1.0+)."""
    flags = discovery.flags if discovery.env.get("DYN_FILE_KV") else ()
    frontend = dynamo_trtllm.frontend_command(http_port, discovery.env)
    wiring.commands[plan.frontend] = Command(frontend.argv + flags, frontend.env)
    wiring.listen(plan.frontend, http_port)
    wiring.model = settings.model or settings.served_model_name
    for worker in plan.workers:  # settings guarantee each has its engine config
        wiring.engine_configs[worker] = str(worker.engine_config)
        command = dynamo_trtllm.worker_command(
            worker, model_path=wiring.model, served_model_name=settings.served_model_name,
            engine_config=str(worker.engine_config), gpus_per_node=settings.gpus_per_node, env=discovery.env,
            dynamo_version=settings.dynamo_version, system_port=wiring.port_for(worker, launcher))
        wiring.commands[worker] = Command(command.argv + flags, command.env, command.tasks_per_node, command.mpi)


def _trtllm_serve(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, configs_dir: Path,
                  wiring: Wiring) -> None:
    """Every worker is a `trtllm-serve` of its own, one MPI task per GPU across its nodes (trtllm_serve [T5]). agg: the
    worker serves the API itself. disagg: the `trtllm-serve disaggregated` proxy takes the frontend's place, started
    after the servers, since it gives up on servers that are not healthy within its start timeout."""
    wiring.model = settings.model or settings.served_model_name
    urls: dict[str, list[str]] = {PREFILL: [], DECODE: []}
    for worker in plan.workers:  # settings guarantee each has its engine config
        port = http_port if worker.role == WORKER else wiring.port_for(worker, launcher)
        if worker.role == WORKER:
            wiring.listen(worker, port)
        ranks = settings.gpus_per_node * worker.node_count
        wiring.engine_configs[worker] = str(worker.engine_config)
        wiring.commands[worker] = trtllm_serve.server_command(
            wiring.model, host="0.0.0.0", port=port, extra_llm_api_options=str(worker.engine_config),
            tp_size=ranks, ep_size=ranks, tasks_per_node=settings.gpus_per_node)
        urls.get(worker.role, []).append(f"{launcher.node_address(worker)}:{port}")
    if plan.topology == "disagg":
        config = trtllm_serve.disaggregated_config(hostname="0.0.0.0", port=http_port, context_urls=urls[PREFILL],
                                                   generation_urls=urls[DECODE])
        configs_dir.mkdir(parents=True, exist_ok=True)
        config_file = configs_dir / f"{plan.frontend.name}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        wiring.engine_configs[plan.frontend] = str(config_file)
        wiring.commands[plan.frontend] = trtllm_serve.disaggregated_command(
            str(config_file), server_start_timeout=int(settings.startup_timeout))
        wiring.listen(plan.frontend, http_port)
