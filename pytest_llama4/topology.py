"""The deployment plan: which services run, how many, on which node, with which engine config. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FRONTEND = "frontend"
WORKER = "worker"
PREFILL = "prefill"
DECODE = "decode"
WORKER_ROLES = (WORKER, PREFILL, DECODE)


@dataclass(frozen=True)
class Service:
    role: str
    index: int
    node: int
    engine_config: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def is_worker(self) -> bool:
        return self.role in WORKER_ROLES


@dataclass(frozen=True)
class Plan:
    topology: str
    services: tuple[Service, ...]

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
        return 1 + max(s.node for s in self.services)

    def describe(self) -> str:
        """E.g. 'disagg: frontend + 1 prefill + 2 decode on 3 nodes'."""
        roles = [r for r in WORKER_ROLES if self.count(r)]
        parts = " + ".join(f"{self.count(r)} {r}" for r in roles)
        nodes = "node" if self.num_nodes == 1 else "nodes"
        return f"{self.topology}: frontend + {parts} on {self.num_nodes} {nodes}"


def make_plan(
    topology: str,
    *,
    prefill_workers: int = 1,
    decode_workers: int = 1,
    engine_config: Path | None = None,
    prefill_engine_config: Path | None = None,
    decode_engine_config: Path | None = None,
) -> Plan:
    """agg: frontend + one worker on node 0. disagg: frontend on node 0 (the head node, shared with the first
    prefill worker as in the seed guide), then one node per prefill worker and per decode worker."""
    frontend = Service(FRONTEND, 0, node=0)
    if topology == "agg":
        return Plan(topology, (frontend, Service(WORKER, 0, node=0, engine_config=engine_config)))
    if topology != "disagg":
        raise ValueError(f"unknown topology {topology!r}")
    if prefill_workers < 1 or decode_workers < 1:
        raise ValueError("disagg needs at least one prefill and one decode worker")
    prefill = tuple(Service(PREFILL, i, node=i, engine_config=prefill_engine_config) for i in range(prefill_workers))
    decode = tuple(
        Service(DECODE, i, node=prefill_workers + i, engine_config=decode_engine_config) for i in range(decode_workers)
    )
    return Plan(topology, (frontend, *prefill, *decode))
