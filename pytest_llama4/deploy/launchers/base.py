"""The launcher interface every launcher (local, slurm, endpoint) implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ...config.topology import Service
from ..engines.base import Command


class ServiceHandle(Protocol):
    service: Service
    command: Command
    log_path: Path

    def returncode(self) -> int | None:
        """None while running, else the exit status."""

    def stop(self, grace: float) -> None:
        """Ask politely (SIGTERM), then force (SIGKILL) after `grace` seconds. Idempotent."""

    def describe(self) -> str:
        """How a person reaches and stops this service by hand."""


class Launcher(Protocol):
    host: str

    def allocate_port(self) -> int:
        """A port that no other service of this deployment will get."""

    def start(self, service: Service, command: Command, log_path: Path) -> ServiceHandle: ...

    def node_names(self, service: Service) -> tuple[str, ...]:
        """The hosts the service runs on, as the cluster names them."""

    def node_address(self, service: Service) -> str:
        """Where other processes reach the service's first node."""

    def close(self) -> None:
        """Release what the launcher itself holds (an allocation it requested), after every service stopped."""
