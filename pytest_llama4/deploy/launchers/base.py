"""The launcher interface every launcher (local, slurm, endpoint) implements, and the helper steps it runs."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ...config.topology import Service
from ..engines.base import Command
from .allocation import Allocation

HELPER_STOP_GRACE_S = 5.0  # a helper step gets SIGTERM, then SIGKILL this much later


class ServiceHandle(Protocol):
    service: Service
    command: Command
    log_path: Path

    @property
    def pid(self) -> int:
        """The launched process here: leader of its own process group (SLURM: the step's srun)."""

    def returncode(self) -> int | None:
        """None while running, else the exit status."""

    def stop(self, grace: float) -> None:
        """Ask politely (SIGTERM), then force (SIGKILL) after `grace` seconds. Idempotent."""

    def describe(self) -> str:
        """How a person reaches and stops this service by hand."""


class StepError(Exception):
    """A helper step could not start; the message says what ran."""


class StepTimeout(StepError):
    """A one-shot helper step did not end in time (it was stopped)."""


def brief(argv: Sequence[str]) -> str:
    """The start of a command line, for messages: `srun --overlap --jobid=42 ...`."""
    return f"`{shlex.join(argv[:3])} ...`"


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


class NodeStep:
    """A helper program on nodes of the deployment (telemetry, a probe), started by `Launcher.run_on_nodes`.

    stdout is a pipe, read either line by line while the step runs, by the `follow` function given at the start
    (called once, with this step, in a thread of the step's own), or whole by `finish()`. stderr goes to the log
    after a header line with the command, or to a temporary file without a log. stdin stays open until the step
    stops, so a helper that runs until its input ends (procscan.py) ends with it. `end(process, grace)` is the
    launcher's way to stop the process and everything it started (a process group, a SLURM step).
    """

    def __init__(self, argv: Sequence[str], nodes: Sequence[str], process: subprocess.Popen[str],
                 end: Callable[[subprocess.Popen[str], float], None], sink: IO[bytes], log_path: Path | None,
                 follow: Callable[[NodeStep], None] | None) -> None:
        self.argv = tuple(argv)  # what was started: the srun line, or the local command
        self.nodes = tuple(nodes)
        self.process = process
        self.log_path = log_path
        self._end = end
        self._sink = sink
        self._stderr_from = sink.tell()  # after the log's header
        self._stopped = False
        self._follower: threading.Thread | None = None
        if follow is not None:
            self._follower = threading.Thread(target=follow, args=(self,), name=f"llama4-step-{self.argv[0]}",
                                              daemon=True)
            self._follower.start()

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None  # always a pipe
        return self.process.stdout

    def returncode(self) -> int | None:
        return self.process.poll()

    def stderr(self) -> str:
        """What the step printed on stderr so far; readable until stop()."""
        fd = self._sink.fileno()
        # pread leaves the offset alone: the child shares it, and a temporary file is not opened for appending
        return os.pread(fd, max(0, os.fstat(fd).st_size - self._stderr_from), self._stderr_from).decode(
            errors="replace")

    def finish(self, timeout: float, poll: Callable[[], None] | None = None) -> Finished:
        """One-shot (a step started without `follow`): wait until it ends and return what it printed; its stdout is
        added to its log. `poll` is called every 0.1 s while waiting and may raise to give up (a Ctrl-C to honour).
        StepTimeout after `timeout` seconds. The step is stopped on every path."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    out, _ = self.process.communicate(timeout=0.1)  # reads stdout to the end, closes stdin
                    break
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
                    if time.monotonic() > deadline:
                        raise StepTimeout(f"{brief(self.argv)} did not finish within {timeout:g}s") from None
            done = Finished(self.process.wait(), out, self.stderr())
            if self.log_path is not None:
                self._sink.write(out.encode())
                self._sink.flush()
            return done
        finally:
            self.stop()

    def stop(self, grace: float = HELPER_STOP_GRACE_S) -> None:
        """End the step and whatever it started (SIGTERM, SIGKILL after `grace`), then its reader; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.stdin is not None:
            self.process.stdin.close()  # end of input: the polite way to stop a helper that reads it
        self._end(self.process, grace)
        if self._follower is not None:
            self._follower.join()  # stdout reached its end with the process
        self.stdout.close()
        self._sink.close()


class Launcher(Protocol):
    host: str
    runs_here: bool  # its nodes are this machine: processes, memory and GPUs are read directly, no helper step
    allocation: Allocation | None  # the SLURM job it runs in; None off SLURM

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node this launcher runs on, as the cluster names them; the head node first."""

    def allocate_port(self) -> int:
        """A port that no other service of this deployment will get."""

    def step_command(self, command: Command) -> Command:
        """The command as the launcher runs it (with what the launcher adds to its environment)."""

    def service_argv(self, service: Service, command: Command) -> list[str]:
        """What `start` executes for the service (pure: the dry run prints exactly this)."""

    def start(self, service: Service, command: Command, log_path: Path) -> ServiceHandle: ...

    def run_on_nodes(self, argv: Sequence[str], nodes: Sequence[str], *, name: str, log_path: Path | None = None,
                     in_image: bool = False, follow: Callable[[NodeStep], None] | None = None) -> NodeStep:
        """Start a helper (no service of the deployment) once on each of `nodes`, labelled like the run's services
        with `name` (also its SLURM step's name: unique among the run's live steps), inside the image when
        `in_image` and there is one. It is tied to the calling thread: it dies with pytest, --keep-deployment or
        not. With `follow`, stdout lines must reach the reader as they are printed. Raises StepError when it cannot
        start."""

    def node_names(self, service: Service) -> tuple[str, ...]:
        """The hosts the service runs on, as the cluster names them."""

    def node_address(self, service: Service) -> str:
        """Where other processes reach the service's first node."""

    def close(self) -> None:
        """Release what the launcher itself holds (an allocation it requested), after every service stopped."""
