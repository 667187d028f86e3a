"""What every engine is (`Engine`), and what it produces: each service's `Command`, gathered in a `Wiring`.

An engine owns everything engine-specific: the command line of each role and how the roles are wired together,
its default configs and model, what readiness waits for, where its metrics live, whether it needs GPUs and where
it can be launched. One file per engine (`dynamo_mocker.py`, `dynamo_trtllm.py`, `trtllm_serve.py`), each with an
`ENGINE`; `engines/__init__.py` is the registry. Nothing outside `engines/` compares engine names.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # types only: settings and launchers build on engines, not the other way round
    from ...config.settings import Settings
    from ...config.topology import Plan, Service
    from ..launchers.base import Launcher
    from .control_plane import Discovery


@dataclass(frozen=True)
class Command:
    """A service's command line and the environment it needs on top of the launcher's."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    tasks_per_node: int = 1  # >1: one task per GPU, launched under MPI
    mpi: bool = False  # srun must pass --mpi=pmix (and --oversubscribe, as the seed scripts do)
    gpus_per_node: int = 0  # GPUs the step asks for on each node (srun gives a step GPUs only when it asks)
    metrics_port: int | None = None  # where its Prometheus /metrics is served (a Dynamo worker: DYN_SYSTEM_PORT)
    metrics_path: str = "/metrics"  # trtllm-serve: /prometheus/metrics (its /metrics is JSON that reading drains)

    @property
    def metrics_at(self) -> int | None:
        system_port = self.env.get("DYN_SYSTEM_PORT")
        return self.metrics_port or (int(system_port) if system_port else None)

    def shell(self) -> str:
        """The command as one copy-pasteable shell line (for logs and error messages)."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join([*assignments, *map(shlex.quote, self.argv)])


@dataclass
class Wiring:
    """Every service's command, in start order, and the ports and files they use."""

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


class Engine(Protocol):
    name: str  # the --engine value
    needs_gpus: bool  # GPU preflight checks, GPUs in the allocation, never a local process
    launchers: tuple[str, ...]  # the launchers that can start it (any engine can be tested at an --endpoint)
    runs_dynamo: bool  # behind Dynamo's frontend: discovery (file or etcd + NATS) and --dynamo-version apply
    config_format: str  # what its engine configs are: "mocker-json" or "llm-api-yaml" (the linter's two forms)
    deterministic_text: bool  # temperature 0 gives the same text every time (the mocker emits random token ids)
    drafts_tokens: bool  # speculative decoding with draft/accepted counters to read (the mocker only simulates it)
    publishes_kv_usage: bool  # its workers' metrics always carry KV-cache usage gauges (else: only when configured)
    default_profile: str | None  # the hardware profile when none is given
    default_startup_timeout: float  # seconds its workers get to load and become ready, when none is given
    writes_engine_configs: bool  # launch writes each worker's complete engine config to reports/<run-id>/engine_configs
    serves_model_path: bool  # a launched server answers to --model itself (it has no served-model-name flag)

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        """Role -> the component a worker registers under, as the Dynamo frontend's /health lists it, in that
        release; empty: the engine has no such list."""

    def lists_models(self, plan: Plan | None) -> bool:
        """Whether readiness can wait for /v1/models to list the served model (plan None: an --endpoint)."""

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        """Why this release publishes no speculative-decoding counters to read, or None when it does."""

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        """Why a healthy deployment of this release may still publish no counters (its engine predates them), or
        None when absent counters are a fault."""

    def check(self, settings: Settings) -> None:
        """Engine-specific usage errors (pytest.UsageError with the fix): what it needs that settings lack."""

    def default_engine_config(self, service: Service) -> Path | None:
        """The shipped engine config of this role, when the engine has one."""

    def default_model(self) -> Path | None:
        """The model served when --model is not given (None: the served model name is the model)."""

    def python(self, settings: Settings) -> str:
        """The interpreter its services run (for probing the versions they see)."""

    def release_uses(self, dynamo_version: str) -> str:
        """What the run takes from the Dynamo release preflight found; ValueError for a release it cannot run."""

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        """What a dry run tells about a real run of this engine."""

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int,
             discovery: Discovery | None, configs_dir: Path, wiring: Wiring) -> None:
        """Add every frontend and worker command of the plan to `wiring` (control-plane services are already in
        it when `runs_dynamo`; `discovery` says how to reach them)."""
