"""The deployment plan: which services run, how many, on which nodes, with which engine config. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FRONTEND = "frontend"
WORKER = "worker"
PREFILL = "prefill"
DECODE = "decode"
ETCD = "etcd"
NATS = "nats"
WORKER_ROLES = (WORKER, PREFILL, DECODE)
DISCOVERY_MODES = ("file", "etcd")


@dataclass(frozen=True)
class Service:
    role: str
    index: int
    node: int  # index of the first node it runs on, in allocation order
    engine_config: Path | None = None
    node_count: int = 1  # a worker spans several nodes when its engine is parallel across them

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(range(self.node, self.node + self.node_count))

    @property
    def is_worker(self) -> bool:
        return self.role in WORKER_ROLES


@dataclass(frozen=True)
class Plan:
    topology: str
    services: tuple[Service, ...]
    discovery: str = "file"

    @property
    def frontend(self) -> Service:
        (frontend,) = (s for s in self.services if s.role == FRONTEND)
        return frontend

    @property
    def workers(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.is_worker)

    def count(self, role: str) -> int:
        return sum(1 for s in self.services if s.role == role)

    @property
    def num_nodes(self) -> int:
        return 1 + max(node for s in self.services for node in s.nodes)

    def describe(self) -> str:
        """E.g. 'disagg: frontend + 1 prefill + 2 decode on 3 nodes'."""
        roles = [r for r in WORKER_ROLES if self.count(r)]
        parts = " + ".join(f"{self.count(r)} {r}" for r in roles)
        nodes = "node" if self.num_nodes == 1 else "nodes"
        control = " (etcd + nats discovery)" if self.discovery == "etcd" else ""
        return f"{self.topology}: frontend + {parts} on {self.num_nodes} {nodes}{control}"


def make_plan(
    topology: str,
    *,
    prefill_workers: int = 1,
    decode_workers: int = 1,
    worker_nodes: int = 1,
    prefill_nodes: int = 1,
    decode_nodes: int = 1,
    engine_config: Path | None = None,
    prefill_engine_config: Path | None = None,
    decode_engine_config: Path | None = None,
    discovery: str = "file",
) -> Plan:
    """agg: the frontend and one worker spanning `worker_nodes` nodes (the seed's NUM_NODES), from node 0.
    disagg: prefill workers first, each on `prefill_nodes` nodes (NUM_PREFILL_NODES), then decode workers,
    each on `decode_nodes` nodes (NUM_DECODE_NODES). The frontend, and etcd + NATS when discovery needs them,
    run exactly once, on node 0: the head node, shared with the first worker as in the seed guide."""
    if discovery not in DISCOVERY_MODES:
        raise ValueError(f"unknown discovery {discovery!r}")
    if min(worker_nodes, prefill_nodes, decode_nodes) < 1:
        raise ValueError("every worker needs at least one node")
    head = [Service(ETCD, 0, node=0), Service(NATS, 0, node=0)] if discovery == "etcd" else []
    head.append(Service(FRONTEND, 0, node=0))
    if topology == "agg":
        worker = Service(WORKER, 0, node=0, engine_config=engine_config, node_count=worker_nodes)
        return Plan(topology, (*head, worker), discovery)
    if topology != "disagg":
        raise ValueError(f"unknown topology {topology!r}")
    if prefill_workers < 1 or decode_workers < 1:
        raise ValueError("disagg needs at least one prefill and one decode worker")
    prefill = tuple(Service(PREFILL, i, node=i * prefill_nodes, engine_config=prefill_engine_config,
                            node_count=prefill_nodes) for i in range(prefill_workers))
    first_decode_node = prefill_workers * prefill_nodes
    decode = tuple(Service(DECODE, i, node=first_decode_node + i * decode_nodes, engine_config=decode_engine_config,
                           node_count=decode_nodes) for i in range(decode_workers))
    return Plan(topology, (*head, *prefill, *decode), discovery)
