"""SLURM steps: one `srun --overlap` step per service inside the allocation, each a child of pytest."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ...config.topology import Service
from ..engines.base import Command
from ..ports import free_port
from .allocation import Allocation, SlurmError, slurm
from .base import NodeStep
from .local import LocalProcess, labelled_env, start_service, start_step

# Hugging Face access inside the container: pyxis gets --no-container-mount-home (the seed scripts pass it), so the
# host's hub cache is mounted at its own path and the token passed by name; a hub id (the seed's MODEL_PATH and
# Eagle3 draft) then resolves from the cache, and a gated model sees the token, instead of a download (or a 401) on
# every node on every run.
HUB_TOKEN_ENV = "HF_TOKEN"


def hub_cache(environ: Mapping[str, str]) -> str | None:
    """The host's Hugging Face cache (HF_HOME, else ~/.cache/huggingface) when it exists."""
    path = Path(environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return str(path).rstrip("/") if path.is_dir() else None


def hub_token_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The token's variable name, when pytest's environment has it: srun exports its value, the line never shows it."""
    return (HUB_TOKEN_ENV,) if environ.get(HUB_TOKEN_ENV) else ()


def srun_argv(service: Service, command: Command, allocation: Allocation, *, step_name: str,
              image: str | None = None, mounts: str | None = None, workdir: str | None = None,
              container_name: str | None = None, pass_env: Sequence[str] = ()) -> list[str]:
    """The full srun line for one service (pure: golden-tested)."""
    nodes = [allocation.nodes[i] for i in service.nodes]
    return srun_line(nodes, command, allocation.job_id, step_name=step_name, image=image, mounts=mounts,
                     workdir=workdir, container_name=container_name, pass_env=pass_env)


def srun_line(nodes: Sequence[str], command: Command, job_id: str, *, step_name: str, image: str | None = None,
              mounts: str | None = None, workdir: str | None = None, unbuffered: bool = False,
              container_name: str | None = None, pass_env: Sequence[str] = ()) -> list[str]:
    """The srun line of every step, a service's or a helper's (pure).

    `--overlap` lets steps share the allocation's CPUs, as the seed scripts' steps do; the task count is explicit,
    so the frontend runs once and not once per GPU. With an image, pyxis flags as the seed scripts pass them;
    `--container-env` makes our variables win over the image's own (and `pass_env` names variables srun exports
    from pytest's environment, whose values never appear on the line); `--container-name` makes every step of the
    run on a node share one container instead of unpacking the image again. `--unbuffered` runs the task's stdout
    on a pty, so each line reaches a reader when it is printed rather than when a pipe buffer fills.
    """
    argv = ["srun", *(["--unbuffered"] if unbuffered else []), "--overlap", f"--jobid={job_id}",
            f"--job-name={step_name}", f"--nodes={len(nodes)}", f"--nodelist={','.join(nodes)}",
            f"--ntasks-per-node={command.tasks_per_node}", f"--ntasks={len(nodes) * command.tasks_per_node}",
            "--kill-on-bad-exit=1"]
    if command.mpi:
        argv += ["--mpi=pmix", "--oversubscribe"]
    if command.gpus_per_node:
        argv += [f"--gpus-per-node={command.gpus_per_node}"]
    if image:
        argv += [f"--container-image={image}", "--no-container-mount-home"]
        argv += [f"--container-name={container_name}"] if container_name else []
        argv += [f"--container-mounts={mounts}"] if mounts else []
        argv += [f"--container-workdir={workdir}"] if workdir else []
        names = sorted({*command.env, *pass_env})
        argv += [f"--container-env={','.join(names)}"] if names else []
    return [*argv, *command.argv]


def step_ids(job_id: str, step_name: str) -> list[str]:
    out = slurm("squeue", "-h", "-s", "-j", job_id, "-o", "%i|%j")
    return [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|{step_name}")]


def cancel_step(process: subprocess.Popen, grace: float, *, job_id: str, step_name: str) -> None:
    """scancel --signal=TERM the step, then KILL it after `grace`; the srun client (`process`) goes with it.
    Returns once squeue no longer lists the step."""
    _scancel(job_id, step_name, "TERM")
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _scancel(job_id, step_name, "KILL")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _wait_until_gone(job_id, step_name)


def _scancel(job_id: str, step_name: str, sig: str) -> None:
    with contextlib.suppress(SlurmError):
        for step in step_ids(job_id, step_name):
            with contextlib.suppress(SlurmError):  # scancel also complains about the job itself: harmless
                slurm("scancel", f"--signal={sig}", step)


def _wait_until_gone(job_id: str, step_name: str, timeout: float = 15.0) -> None:
    """SLURM ends a step asynchronously; wait until squeue no longer lists it."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(SlurmError):
        while step_ids(job_id, step_name) and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass
class SlurmStep(LocalProcess):
    """A service as a SLURM step: `process` is its srun client, a child of pytest, that lives as long as the step."""

    job_id: str
    step_name: str
    nodes: tuple[str, ...]

    def stop(self, grace: float) -> None:
        cancel_step(self.process, grace, job_id=self.job_id, step_name=self.step_name)

    def describe(self) -> str:
        steps = ", ".join(step_ids(self.job_id, self.step_name)) or "?"
        return (f"{self.service.name}: SLURM step {steps} on {', '.join(self.nodes)}, stop with "
                f"`scancel {steps}`, log {self.log_path}")


def step_name_for(run_label: str, what: str) -> str:
    """Every SLURM step of a run is named after it, so `squeue -s` shows whose it is."""
    return f"llama4-{run_label}-{what}"


@dataclass
class SlurmLauncher:
    allocation: Allocation
    run_label: str
    runs_here: ClassVar[bool] = False
    image: str | None = None
    mounts: str | None = None
    tied_to_pytest: bool = True  # False for --keep-deployment: the steps must outlive pytest
    _ports: set[int] = field(default_factory=set)

    @property
    def host(self) -> str:
        """The head node's address: where the frontend (and etcd, NATS) listen."""
        return self.allocation.address(self.allocation.nodes[0])

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.allocation.nodes

    def node_address(self, service: Service) -> str:
        return self.allocation.address(self.allocation.nodes[service.node])

    def node_names(self, service: Service) -> tuple[str, ...]:
        return tuple(self.allocation.nodes[i] for i in service.nodes)

    def allocate_port(self) -> int:
        """Unique within the deployment, so services on "nodes" that share one host never collide."""
        port = free_port("0.0.0.0", exclude=frozenset(self._ports))
        self._ports.add(port)
        return port

    @property
    def container_name(self) -> str:
        """One container per node for every step of the run: the image is unpacked once per node, not per step."""
        return f"llama4-{self.run_label}"

    @property
    def container_mounts(self) -> str | None:
        """MOUNTS, plus the host's Hugging Face cache at its own path (home is not mounted: see hub_cache)."""
        cache = hub_cache(os.environ)
        if cache is None or any(m.split(":")[0].rstrip("/") == cache for m in (self.mounts or "").split(",")):
            return self.mounts
        return ",".join(filter(None, [self.mounts, f"{cache}:{cache}"]))

    def step_command(self, command: Command) -> Command:
        """The command as its step runs it: in a container, HF_HOME points at the mounted hub cache."""
        cache = hub_cache(os.environ) if self.image else None
        return dataclasses.replace(command, env={**command.env, "HF_HOME": cache}) if cache else command

    def service_argv(self, service: Service, command: Command) -> list[str]:
        """The srun line that starts `service` (pure: the dry run prints exactly this)."""
        return srun_argv(service, command, self.allocation, step_name=step_name_for(self.run_label, service.name),
                         image=self.image, mounts=self.container_mounts, container_name=self.container_name,
                         pass_env=hub_token_env(os.environ))

    def start(self, service: Service, command: Command, log_path: Path) -> SlurmStep:
        step_name = step_name_for(self.run_label, service.name)
        command = self.step_command(command)
        argv = self.service_argv(service, command)
        process = start_service(argv, labelled_env(command.env, self.run_label, service.name), log_path,
                                Command(tuple(argv), command.env).shell(), tied_to_pytest=self.tied_to_pytest)
        return SlurmStep(service, command, log_path, process, self.allocation.job_id, step_name,
                         self.node_names(service))

    def helper_argv(self, argv: Sequence[str], nodes: Sequence[str], *, name: str, in_image: bool = False,
                    unbuffered: bool = False) -> list[str]:
        """The srun line of a helper step (pure): one task per node, built as a service's step is."""
        return srun_line(nodes, Command(tuple(argv)), self.allocation.job_id,
                         step_name=step_name_for(self.run_label, name), image=self.image if in_image else None,
                         mounts=self.container_mounts, unbuffered=unbuffered, container_name=self.container_name,
                         pass_env=hub_token_env(os.environ))

    def run_on_nodes(self, argv: Sequence[str], nodes: Sequence[str], *, name: str, log_path: Path | None = None,
                     in_image: bool = False, follow: Callable[[NodeStep], None] | None = None) -> NodeStep:
        """One `srun --overlap` step with a task on each of `nodes`, cancelled (and its srun client reaped) on
        stop; a followed step runs `--unbuffered`."""
        srun = self.helper_argv(argv, nodes, name=name, in_image=in_image, unbuffered=follow is not None)
        end = functools.partial(cancel_step, job_id=self.allocation.job_id,
                                step_name=step_name_for(self.run_label, name))
        return start_step(srun, labelled_env({}, self.run_label, name), nodes, end=end, log_path=log_path,
                          follow=follow)

    def close(self) -> None:
        """Release an allocation we requested; one we run inside belongs to the user."""
        self.allocation.release()
