"""--dry-run: resolve the settings and the plan, wire every service as a real run would, print each one's full
command line (the complete `srun` line on SLURM) and write `reports/<run-id>/plan/`: one runnable script per
service and the engine configs each one reads. Nothing is launched: no process, no srun step, no salloc, and no
SLURM preflight, so it also works outside an allocation with --nodelist.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from ..config.settings import Settings
from ..config.topology import Service
from ..deploy.engines import engine_for
from ..deploy.engines.base import Command
from ..deploy.launchers import allocation as slurm_allocation
from ..deploy.launchers import allocation_request, needs_allocation
from ..deploy.launchers.allocation import Allocation, SlurmError, resolve_address
from ..deploy.launchers.base import Launcher
from ..deploy.launchers.local import RUN_LABEL_ENV, SERVICE_LABEL_ENV, LocalLauncher
from ..deploy.launchers.slurm import SlurmLauncher
from ..deploy.wiring import Wiring, wire

PLAN_DIR = "plan"
CONFIGS_DIR = "engine_configs"
PORTS_NOTE = "ports are picked on this host at dry-run time; a real run picks its own"
ADDRESS_TIMEOUT = 5.0
JOB_VAR = "${SLURM_JOB_ID}"  # outside an allocation: the scripts run in whichever allocation they are started in


@dataclass
class PlannedAllocation(Allocation):
    """Nodes to plan on, with their addresses as SLURM knows them (NodeAddr), resolved where this machine can; a
    node it cannot resolve is shown by its NodeAddr (a real run stops on it)."""

    known: dict[str, str] = field(default_factory=dict)

    def address(self, node: str) -> str:
        node_addr = self.known.get(node, node)
        try:
            return resolve_address(node, node_addr)
        except SlurmError:
            return node_addr


def node_addresses(nodes: tuple[str, ...]) -> dict[str, str]:
    """NodeAddr of every node, asked of SLURM once and briefly: a dry run must not wait on an absent controller."""
    try:
        out = slurm_allocation.slurm("scontrol", "show", "node", "-o", ",".join(nodes), timeout=ADDRESS_TIMEOUT)
    except SlurmError:
        return {}
    return dict(re.findall(r"\bNodeName=(\S+).*?\bNodeAddr=(\S+)", out))


def exit_with_plan(settings: Settings, run_id: str, run_dir: Path, release_assumed: bool = False) -> NoReturn:
    """Print what the run would launch, write its plan, and end pytest with status 0 before anything is collected."""
    if not settings.launches:
        pytest.exit(f"pytest-llama4 --dry-run: nothing to launch, the suites would run against {settings.endpoint}",
                    returncode=0)
    print(write_plan(settings, run_id, run_dir / PLAN_DIR, release_assumed=release_assumed), flush=True)
    pytest.exit(f"pytest-llama4 --dry-run: nothing was launched; plan in {run_dir / PLAN_DIR}", returncode=0)


def write_plan(settings: Settings, run_id: str, plan_dir: Path, environ: Mapping[str, str] | None = None, *,
               release_assumed: bool = False) -> str:
    """Write the scripts and engine configs into `plan_dir`; return the text that shows them. `release_assumed`:
    no --dynamo-version was given, so the Dynamo release the lines are rendered for is the default's."""
    plan = settings.plan
    allocation = planned_allocation(settings, plan.num_nodes, os.environ if environ is None else environ) \
        if needs_allocation(settings) else None
    launcher = SlurmLauncher(allocation, run_id, image=settings.image, mounts=settings.mounts) if allocation \
        else LocalLauncher(run_label=run_id)
    http_port = settings.http_port or launcher.allocate_port()
    wiring = wire(plan, settings, launcher, http_port, plan_dir / "scratch", plan_dir / CONFIGS_DIR)
    lines = [f"pytest-llama4 --dry-run, run {run_id}: nothing was launched",
             f"plan: {settings.engine} {plan.describe()}, API at http://{launcher.host}:{http_port}",
             _where(settings, allocation, launcher), *_allocation_note(settings, run_id),
             *_release_note(settings, release_assumed), PORTS_NOTE,
             _real_run_note(settings, launcher.host, http_port), ""]
    for service, command in wiring.commands.items():
        env, argv = launch_line(service, command, run_id, launcher)
        nodes = ", ".join(launcher.node_names(service))
        _write_script(plan_dir / f"{service.name}.sh", f"{service.name} ({service.role}) of pytest-llama4 run "
                                                       f"{run_id}, on {nodes}", env, argv)
        lines += [f"{service.name} on {nodes} ({launcher.node_address(service)}), "
                  f"listens on {', '.join(map(str, wiring.listens.get(service, []))) or '-'}"
                  + _config_note(service, wiring, settings, plan_dir), f"  {shell_line(env, argv)}"]
    scripts = " ".join(f"{s.name}.sh" for s in wiring.commands)
    lines += ["", f"wrote {plan_dir}/: {scripts} (start them in this order), {CONFIGS_DIR}/"]
    return "\n".join(lines)


def launch_line(service: Service, command: Command, run_id: str,
                launcher: Launcher) -> tuple[dict[str, str], list[str]]:
    """The environment pytest adds and the argv it executes for one service, as SlurmLauncher.start (the srun line)
    or LocalLauncher.start would (tests/test_dryrun.py holds the two together)."""
    command = launcher.step_command(command)
    env = {**command.env, RUN_LABEL_ENV: run_id, SERVICE_LABEL_ENV: service.name}
    return env, launcher.service_argv(service, command)


def planned_allocation(settings: Settings, needed: int, environ: Mapping[str, str]) -> PlannedAllocation:
    """--nodelist, else the allocation pytest runs inside; the job is SLURM_JOB_ID's, or the scripts' own."""
    if settings.nodelist:
        nodes = expand_nodelist(settings.nodelist)
    else:
        try:
            current = slurm_allocation.current(environ)
        except SlurmError as error:
            raise pytest.UsageError(f"--dry-run --launcher=slurm: {error}") from None
        if current is None:
            raise pytest.UsageError("--dry-run --launcher=slurm outside an allocation: name the nodes to plan on "
                                    f"with --nodelist (e.g. --nodelist=node[1-{needed}])")
        nodes = current.nodes
    if len(nodes) < needed:
        raise pytest.UsageError(f"--dry-run: the plan needs {needed} node(s), the nodes given are "
                                f"{', '.join(nodes)}: name more with --nodelist")
    return PlannedAllocation(environ.get("SLURM_JOB_ID") or JOB_VAR, nodes, known=node_addresses(nodes))


def expand_nodelist(nodelist: str) -> tuple[str, ...]:
    """`node[1-2],gpu-[01,03]` as SLURM expands it (`scontrol show hostnames`) where it is installed, else here."""
    if shutil.which("scontrol"):
        try:
            return slurm_allocation.hostnames(nodelist)
        except SlurmError:
            pass  # installed but not configured: the expansion below is the same
    return tuple(name for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist) for name in _expand(item))


def _expand(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, rest = item[:match.start()], _expand(item[match.end():])
    names = []
    for part in match.group(1).split(","):
        low, _, high = part.partition("-")
        names += [f"{head}{str(n).zfill(len(low))}{tail}" for n in range(int(low), int(high or low) + 1)
                  for tail in rest]
    return names


def _where(settings: Settings, allocation: Allocation | None, launcher: SlurmLauncher | LocalLauncher) -> str:
    if allocation is None:
        return f"local processes on {launcher.host}"
    nodes = ", ".join(f"{n} ({allocation.address(n)})" for n in allocation.nodes)
    job = allocation.job_id if allocation.job_id != JOB_VAR else f"{JOB_VAR} (the allocation the scripts run in)"
    container = f"; image {settings.image}, mounts {settings.mounts or '-'}" if settings.image else ""
    return f"slurm: job {job}, nodes {nodes}{container}"


def _release_note(settings: Settings, assumed: bool) -> list[str]:
    """A Dynamo engine's flags and readiness names depend on its release: say which one the lines are for."""
    if not engine_for(settings.engine).runs_dynamo:
        return []
    if not assumed:
        return [f"Dynamo release: {settings.dynamo_version} (--dynamo-version)"]
    return [f"Dynamo release: ASSUMED {settings.dynamo_version} (no --dynamo-version or DYNAMO_VERSION given): the "
            "workers' flags and the components readiness waits for follow it; set --dynamo-version to the release in "
            "the image (a real run probes it in preflight)"]


def _allocation_note(settings: Settings, run_id: str) -> list[str]:
    """With --slurm-alloc, the allocation a real run requests first (and releases at the end)."""
    if not settings.slurm_alloc:
        return []
    wanted = allocation_request(settings, run_id, settings.plan.num_nodes)
    return [f"--slurm-alloc: a real run first requests `{shlex.join(wanted.argv())}` (released at the end)"]


def _real_run_note(settings: Settings, host: str, http_port: int) -> str:
    return engine_for(settings.engine).dry_run_note(settings, f"http://{host}:{http_port}")


def _config_note(service: Service, wiring: Wiring, settings: Settings, plan_dir: Path) -> str:
    """Where the engine config a service reads is, and its copy in the plan (the file itself when we wrote it)."""
    config = wiring.engine_configs.get(service)
    if config is None:
        return ""
    path = Path(config)
    if path.is_relative_to(plan_dir):
        return f", reads {CONFIGS_DIR}/{path.name}"
    local = settings.on_host(path)
    if local is None or not local.is_file():
        return f", reads {config} (inside the image: not copied)"
    copy = plan_dir / CONFIGS_DIR / f"{service.name}{path.suffix}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, copy)
    return f", reads {config} (copy: {CONFIGS_DIR}/{copy.name})"


def _word(arg: str) -> str:
    """Shell quoting; the job placeholder stays expandable."""
    return f'"{arg}"' if JOB_VAR in arg else shlex.quote(arg)


def shell_line(env: Mapping[str, str], argv: list[str]) -> str:
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), *map(_word, argv)])


def _write_script(path: Path, title: str, env: Mapping[str, str], argv: list[str]) -> None:
    lines = ["#!/usr/bin/env bash", f"# {title}: written by --dry-run, which launched nothing", "set -euo pipefail"]
    if any(JOB_VAR in arg for arg in argv):
        lines.append(': "${SLURM_JOB_ID:?run this inside the SLURM allocation (salloc)}"')
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"exec {' '.join(map(_word, argv))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
