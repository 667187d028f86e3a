"""Local processes: each service is a subprocess in its own process group, its output in its log file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

from ...config.topology import Service
from ..engines.base import Command
from ..ports import free_port
from .base import NodeStep, StepError, brief

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs it when the thread that started it dies, so a pytest that is
    itself SIGKILLed (no teardown possible) leaves no service behind. The starting thread must live as long as
    the deployment: pytest's main thread, or the xdist controller's host thread, which waits for the stop."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process's whole group, SIGKILL it after `grace`: a process's own children must not outlive it."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    _signal_group(process.pid, signal.SIGKILL)  # also reaps stragglers left in the group by a leader that exited
    process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


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
        stop_group(self.process, grace)

    def describe(self) -> str:
        return f"{self.service.name}: pid {self.pid}, stop with `kill -TERM -- -{self.pid}`, log {self.log_path}"


# Every launched process carries its run id and service name in these environment variables, so a leak can be
# traced to its run and a service's processes found on any node (host memory, OOM checks).
RUN_LABEL_ENV = "PYTEST_LLAMA4_RUN"
SERVICE_LABEL_ENV = "PYTEST_LLAMA4_SERVICE"


def labelled_env(env: Mapping[str, str], run_label: str, name: str) -> dict[str, str]:
    return {**os.environ, **env, RUN_LABEL_ENV: run_label, SERVICE_LABEL_ENV: name}


def open_log(log_path: Path, shell_line: str) -> IO[bytes]:
    """A log opened for appending, headed by the command line whose output it takes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab+")
    log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {shell_line}\n".encode())
    log.flush()
    return log


def start_service(argv: Sequence[str], env: Mapping[str, str], log_path: Path, shell_line: str, *,
                  tied_to_pytest: bool) -> subprocess.Popen:
    """A service's process (or srun client), its output in its log, in its own process group: Ctrl-C in the
    terminal reaches pytest only."""
    with open_log(log_path, shell_line) as log:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env), start_new_session=True,
                                preexec_fn=die_with_parent if tied_to_pytest else None)


def start_step(argv: Sequence[str], env: Mapping[str, str], nodes: Sequence[str], *,
               end: Callable[[subprocess.Popen[str], float], None], log_path: Path | None,
               follow: Callable[[NodeStep], None] | None) -> NodeStep:
    """A helper step's process (the program, or its srun client), in its own process group and always tied to
    the starting thread: a helper never outlives pytest, whatever --keep-deployment says of the services."""
    # held by the step until it stops: no `with`
    sink = open_log(log_path, shlex.join(argv)) if log_path is not None else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sink, text=True,
                                   env=dict(env), start_new_session=True, preexec_fn=die_with_parent)
    except OSError as error:
        sink.close()
        raise StepError(f"{brief(argv)} failed: {error}") from None
    return NodeStep(argv, nodes, process, end, sink, log_path, follow)


@dataclass
class LocalLauncher:
    run_label: str
    host: str = "127.0.0.1"
    runs_here: ClassVar[bool] = True
    allocation: ClassVar[None] = None
    tied_to_pytest: bool = True  # False for --keep-deployment: the services must outlive pytest
    _ports: set[int] = field(default_factory=set)

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.host,)

    def allocate_port(self) -> int:
        port = free_port(self.host, exclude=frozenset(self._ports))
        self._ports.add(port)
        return port

    def node_names(self, service: Service) -> tuple[str, ...]:
        return (self.host,)

    def node_address(self, service: Service) -> str:
        return self.host

    def step_command(self, command: Command) -> Command:
        return command

    def service_argv(self, service: Service, command: Command) -> list[str]:
        return list(command.argv)

    def start(self, service: Service, command: Command, log_path: Path) -> LocalProcess:
        process = start_service(self.service_argv(service, command),
                                labelled_env(command.env, self.run_label, service.name), log_path, command.shell(),
                                tied_to_pytest=self.tied_to_pytest)
        return LocalProcess(service, command, log_path, process)

    def run_on_nodes(self, argv: Sequence[str], nodes: Sequence[str], *, name: str, log_path: Path | None = None,
                     in_image: bool = False, follow: Callable[[NodeStep], None] | None = None) -> NodeStep:
        """One process on this machine, which is every node of a local deployment; there is no image here. A
        program that is followed must flush its lines itself (nothing gives it a terminal)."""
        return start_step(argv, labelled_env({}, self.run_label, name), nodes, end=stop_group, log_path=log_path,
                          follow=follow)

    def close(self) -> None:
        """Local processes hold nothing beyond themselves."""
