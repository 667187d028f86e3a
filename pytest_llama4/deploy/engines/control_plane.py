"""How Dynamo services find each other: a shared directory, or etcd + NATS started once on the head node."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...config.topology import DECODE, PREFILL, WORKER
from .base import Command


def preflight_note(flags: str = "") -> str:
    """What a dry run says about a real run of a Dynamo engine."""
    return ("a real run first runs preflight on every node (--skip-preflight=CHECK skips one) and takes the "
            f"Dynamo release it finds there, which picks the workers' flags{flags}")


# Worker role -> the Dynamo component it registers under, as the frontend's /health lists it (Dynamo 1.3 and newer,
# the mocker included).
HEALTH_COMPONENTS = {WORKER: "backend", PREFILL: "prefill", DECODE: "backend"}


@dataclass(frozen=True)
class Discovery:
    """Flags and environment every Dynamo process of one deployment gets."""

    flags: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def file_discovery(directory: Path) -> Discovery:
    """No etcd or NATS: a directory every node sees (DESIGN.md section 4), TCP requests, ZMQ events."""
    flags = ("--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq")
    return Discovery(flags, {"DYN_FILE_KV": str(directory)})


ETCD_PORT = 2379  # the seed's srun_*.sh scripts
NATS_PORT = 4222


def control_plane_env(head_ip: str, etcd_port: int = ETCD_PORT, nats_port: int = NATS_PORT) -> dict[str, str]:
    """ETCD_ENDPOINTS and NATS_SERVER exactly as the seed's srun_aggregated.sh / srun_disaggregated.sh export
    them (ai-dynamo/dynamo components/backends/trtllm/multinode/ @ 1cc36a6): etcd without a scheme, NATS with one."""
    if not head_ip or head_ip == "0.0.0.0":
        raise ValueError(f"head_ip must be the head node's address, not {head_ip!r}")
    return {"ETCD_ENDPOINTS": f"{head_ip}:{etcd_port}", "NATS_SERVER": f"nats://{head_ip}:{nats_port}"}


def etcd_discovery(host: str, etcd_port: int, nats_port: int) -> Discovery:
    """The seed scripts' control plane on the head node; the flags select it explicitly (Dynamo 1.0 and newer)."""
    flags = ("--discovery-backend", "etcd", "--request-plane", "nats", "--event-plane", "nats")
    return Discovery(flags, control_plane_env(host, etcd_port, nats_port))


def etcd_command(host: str, client_port: int, peer_port: int, data_dir: Path) -> Command:
    """A single-member etcd, as the seed's start_frontend_services.sh runs it, on ports of our choosing."""
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    return Command(("etcd", "--name", "llama4", "--data-dir", str(data_dir), "--listen-client-urls", client,
                    "--advertise-client-urls", client, "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer, "--initial-cluster", f"llama4={peer}"))


def nats_command(host: str, port: int, store_dir: Path) -> Command:
    """nats-server with JetStream (-js), as the seed runs it."""
    return Command(("nats-server", "-js", "--addr", host, "--port", str(port), "--store_dir", str(store_dir)))
