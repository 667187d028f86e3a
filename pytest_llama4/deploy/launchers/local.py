"""Local processes: each service is a subprocess in its own process group, its output in its log file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...config.topology import Service
from ..engines.base import Command
from ..ports import free_port

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs it when the thread that started it dies, so a pytest that is
    itself SIGKILLed (no teardown possible) leaves no service behind. The starting thread must live as long as
    the deployment: pytest's main thread, or the xdist controller's host thread, which waits for the stop."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class LocalProcess:
    service: Service
    command: Command
    log_path: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self, grace: float) -> None:
        """Signal the whole process group: a service's own children must not outlive it."""
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        self._signal_group(signal.SIGKILL)  # also reaps stragglers left in the group by a leader that exited
        self.process.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def describe(self) -> str:
        return f"{self.service.name}: pid {self.pid}, stop with `kill -TERM -- -{self.pid}`, log {self.log_path}"


# Every launched process carries its run id and service name in these environment variables, so a leak can be
# traced to its run and a service's processes found on any node (host memory, OOM checks).
RUN_LABEL_ENV = "PYTEST_LLAMA4_RUN"
SERVICE_LABEL_ENV = "PYTEST_LLAMA4_SERVICE"


def labelled_env(command: Command, run_label: str, service: Service) -> dict[str, str]:
    return {**os.environ, **command.env, RUN_LABEL_ENV: run_label, SERVICE_LABEL_ENV: service.name}


@dataclass
class LocalLauncher:
    run_label: str
    host: str = "127.0.0.1"
    tied_to_pytest: bool = True  # False for --keep-deployment: the services must outlive pytest
    _ports: set[int] = field(default_factory=set)

    def allocate_port(self) -> int:
        port = free_port(self.host, exclude=frozenset(self._ports))
        self._ports.add(port)
        return port

    def node_names(self, service: Service) -> tuple[str, ...]:
        return (self.host,)

    def node_address(self, service: Service) -> str:
        return self.host

    def start(self, service: Service, command: Command, log_path: Path) -> LocalProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {command.shell()}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=labelled_env(command, self.run_label, service),
                start_new_session=True,  # own process group: Ctrl-C in the terminal reaches pytest only
                preexec_fn=die_with_parent if self.tied_to_pytest else None,
            )
        return LocalProcess(service, command, log_path, process)

    def close(self) -> None:
        """Local processes hold nothing beyond themselves."""
