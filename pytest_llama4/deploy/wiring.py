"""Plan + settings + launcher -> every service's command, in start order: the engines' argv, wired together
(control plane, discovery, ports, addresses). The engines stay pure; the resolved configs land in the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config.settings import Settings
from ..config.topology import ETCD, NATS, Plan
from .engines import control_plane, engine_for
from .engines.base import Wiring
from .engines.control_plane import Discovery
from .launchers.base import Launcher


def wire(plan: Plan, settings: Settings, launcher: Launcher, http_port: int, scratch: Path,
         configs_dir: Path, reuse_ports: Sequence[int] = ()) -> Wiring:
    """`reuse_ports`: an earlier wiring's `taken` ports, handed out again in the same order, so that re-wiring the
    same plan (for the Dynamo release preflight probed) keeps the ports preflight found free."""
    wiring = Wiring(reused=list(reuse_ports))
    engine = engine_for(settings.engine)
    discovery = _discovery(plan, launcher, scratch, _control_plane_data(settings, scratch), wiring) \
        if engine.runs_dynamo else None
    engine.wire(plan, settings, launcher, http_port, discovery, configs_dir, wiring)
    return wiring


def _control_plane_data(settings: Settings, scratch: Path) -> Path:
    """Where etcd and NATS keep their data: the run's scratch directory, or inside the container with an image,
    where the host's reports directory is not mounted (the seed's start_frontend_services.sh uses /tmp/etcd)."""
    return Path("/tmp") / f"llama4-{scratch.name}" if settings.image else scratch


def _discovery(plan: Plan, launcher: Launcher, scratch: Path, data: Path, wiring: Wiring) -> Discovery:
    """etcd + NATS as steps on the head node (on ports of our choosing), or a shared discovery directory."""
    if plan.discovery == "file":
        return control_plane.file_discovery(scratch / "discovery")
    by_role = {s.role: s for s in plan.services}
    etcd, nats = by_role[ETCD], by_role[NATS]
    etcd_port, peer_port = wiring.port_for(etcd, launcher), wiring.port_for(etcd, launcher)
    nats_port = wiring.port_for(nats, launcher)
    wiring.commands[etcd] = control_plane.etcd_command(launcher.host, etcd_port, peer_port, data / "etcd")
    wiring.commands[nats] = control_plane.nats_command(launcher.host, nats_port, data / "nats")
    wiring.ports |= {etcd: etcd_port, nats: nats_port}
    return control_plane.etcd_discovery(launcher.host, etcd_port, nats_port)
