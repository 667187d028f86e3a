"""SLURM steps: one `srun --overlap` step per service inside the allocation, each a child of pytest."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...config.topology import Service
from ..engines.base import Command
from ..ports import free_port
from .allocation import Allocation, SlurmError, slurm
from .local import die_with_parent, labelled_env


def srun_argv(service: Service, command: Command, allocation: Allocation, *, step_name: str,
              image: str | None = None, mounts: str | None = None, workdir: str | None = None) -> list[str]:
    """The full srun line for one service (pure: golden-tested).

    `--overlap` lets steps share the allocation's CPUs, as the seed scripts' steps do; the task count is explicit,
    so the frontend runs once and not once per GPU. With an image, pyxis flags as the seed scripts pass them;
    `--container-env` makes our variables win over the image's own.
    """
    nodes = [allocation.nodes[i] for i in service.nodes]
    argv = ["srun", "--overlap", f"--jobid={allocation.job_id}", f"--job-name={step_name}",
            f"--nodes={len(nodes)}", f"--nodelist={','.join(nodes)}", f"--ntasks-per-node={command.tasks_per_node}",
            f"--ntasks={len(nodes) * command.tasks_per_node}", "--kill-on-bad-exit=1"]
    if command.mpi:
        argv += ["--mpi=pmix", "--oversubscribe"]
    if image:
        argv += [f"--container-image={image}", "--no-container-mount-home"]
        argv += [f"--container-mounts={mounts}"] if mounts else []
        argv += [f"--container-workdir={workdir}"] if workdir else []
        argv += [f"--container-env={','.join(sorted(command.env))}"] if command.env else []
    return [*argv, *command.argv]


@dataclass
class SlurmStep:
    service: Service
    command: Command
    log_path: Path
    process: subprocess.Popen  # the srun client, a child of pytest
    job_id: str
    step_name: str
    nodes: tuple[str, ...]

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        return self.process.poll()

    def step_ids(self) -> list[str]:
        out = slurm("squeue", "-h", "-s", "-j", self.job_id, "-o", "%i|%j")
        return [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|{self.step_name}")]

    def stop(self, grace: float) -> None:
        """scancel --signal=TERM the step, then KILL it after `grace`; the srun client goes with it."""
        with contextlib.suppress(SlurmError):
            for step in self.step_ids():
                with contextlib.suppress(SlurmError):  # scancel also complains about the job itself: harmless
                    slurm("scancel", "--signal=TERM", step)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(SlurmError):
                for step in self.step_ids():
                    with contextlib.suppress(SlurmError):
                        slurm("scancel", "--signal=KILL", step)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        self._wait_until_gone()

    def _wait_until_gone(self, timeout: float = 15.0) -> None:
        """SLURM ends a step asynchronously; wait until squeue no longer lists it."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(SlurmError):
            while self.step_ids() and time.monotonic() < deadline:
                time.sleep(0.2)

    def describe(self) -> str:
        steps = ", ".join(self.step_ids()) or "?"
        return (f"{self.service.name}: SLURM step {steps} on {', '.join(self.nodes)}, stop with "
                f"`scancel {steps}`, log {self.log_path}")


def step_name_for(run_label: str, what: str) -> str:
    """Every SLURM step of a run is named after it, so `squeue -s` shows whose it is."""
    return f"llama4-{run_label}-{what}"


@dataclass
class SlurmLauncher:
    allocation: Allocation
    run_label: str
    image: str | None = None
    mounts: str | None = None
    tied_to_pytest: bool = True  # False for --keep-deployment: the steps must outlive pytest
    _ports: set[int] = field(default_factory=set)

    @property
    def host(self) -> str:
        """The head node's address: where the frontend (and etcd, NATS) listen."""
        return self.allocation.address(self.allocation.nodes[0])

    def node_address(self, service: Service) -> str:
        return self.allocation.address(self.allocation.nodes[service.node])

    def node_names(self, service: Service) -> tuple[str, ...]:
        return tuple(self.allocation.nodes[i] for i in service.nodes)

    def allocate_port(self) -> int:
        """Unique within the deployment, so services on "nodes" that share one host never collide."""
        port = free_port("0.0.0.0", exclude=frozenset(self._ports))
        self._ports.add(port)
        return port

    def start(self, service: Service, command: Command, log_path: Path) -> SlurmStep:
        step_name = step_name_for(self.run_label, service.name)
        argv = srun_argv(service, command, self.allocation, step_name=step_name, image=self.image,
                         mounts=self.mounts)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {Command(tuple(argv), command.env).shell()}\n".encode())
            log.flush()
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=labelled_env(command, self.run_label, service),
                                       start_new_session=True,
                                       preexec_fn=die_with_parent if self.tied_to_pytest else None)
        return SlurmStep(service, command, log_path, process, self.allocation.job_id, step_name,
                         self.node_names(service))

    def close(self) -> None:
        """Release an allocation we requested; one we run inside belongs to the user."""
        self.allocation.release()
