"""Launchers start planned services and hand back handles that can be polled, read and stopped; they also run
helper steps (telemetry, probes) on the deployment's nodes."""

from __future__ import annotations

import os

import pytest

from ...config.settings import Settings
from ..engines import engine_for
from . import allocation as slurm_allocation
from .base import Launcher
from .local import LocalLauncher
from .slurm import SlurmLauncher


def settle(settings: Settings) -> Settings:
    """The launcher's part of validating settings (after the engine's): what a SLURM launch needs. Every problem is
    a pytest.UsageError that says how to fix it."""
    if settings.slurm_alloc and settings.launcher != "slurm":
        raise pytest.UsageError("--slurm-alloc requests a SLURM allocation: add --launcher=slurm")
    if settings.launcher != "slurm":
        return settings
    engine = engine_for(settings.engine)
    if settings.image and settings.discovery == "file" and engine.runs_dynamo:
        raise pytest.UsageError("--image with --discovery=file: containers would each need the discovery directory "
                                "mounted; use --discovery=etcd, the seed guide's etcd + NATS on the head node")
    if engine.needs_gpus:
        _require_engine_configs(settings)
    return settings


def _require_engine_configs(settings: Settings) -> None:
    """GPU workers take their engine config from the seed guide's variables; there is no safe default."""
    needed = ("engine_config",) if settings.topology == "agg" else ("prefill_engine_config", "decode_engine_config")
    missing = [name.upper() for name in needed if not getattr(settings, name)]
    if missing:
        raise pytest.UsageError(
            f"--engine={settings.engine} --topology={settings.topology} needs {' and '.join(missing)} (or "
            f"--{missing[0].lower().replace('_', '-')}), e.g. /mnt/engine_configs/llama4/eagle/eagle_"
            f"{'agg' if settings.topology == 'agg' else 'prefill'}.yaml with MOUNTS=\"$PWD/:/mnt\"")


def allocation_at_configure(settings: Settings) -> slurm_allocation.Allocation | None:
    """The allocation pytest runs inside, checked against the plan before anything is collected (SLURM only; None
    elsewhere, and when --slurm-alloc will request one)."""
    return slurm_preflight(settings, settings.plan.num_nodes) if settings.launcher == "slurm" else None


def find_allocation(settings: Settings, run_id: str) -> slurm_allocation.Allocation | None:
    """The SLURM job a --slurm-alloc run requested under its name, as any process of the run finds it (an xdist
    worker holds no launcher). None off SLURM, or when there is none."""
    if settings.launcher != "slurm":
        return None
    try:
        found = slurm_allocation.slurm("squeue", "-h", f"--name=pytest-llama4-{run_id}", "-o", "%i|%N").split()
    except slurm_allocation.SlurmError:
        return None
    if not found:
        return None
    job_id, nodelist = found[0].split("|")
    return slurm_allocation.Allocation(job_id, slurm_allocation.hostnames(nodelist))


def slurm_preflight(settings: Settings, needed_nodes: int) -> slurm_allocation.Allocation | None:
    """Before anything is collected or launched: the allocation pytest runs inside, checked against the plan.
    None when --slurm-alloc will request one sized to the plan. Problems are usage errors."""
    if settings.slurm_alloc:
        return None
    try:
        found = slurm_allocation.current(os.environ)
    except slurm_allocation.SlurmError as error:
        raise pytest.UsageError(f"--launcher=slurm: {error}") from None
    if found is None:
        raise pytest.UsageError(
            f"--launcher=slurm runs inside a SLURM allocation and SLURM_JOB_ID is not set: run pytest inside "
            f"`salloc -N{needed_nodes} ...`, or pass --slurm-alloc (with --partition/--account/--time) to request one")
    gpus = settings.gpus_per_node if engine_for(settings.engine).needs_gpus else None
    try:
        slurm_allocation.check_fits(found, needed_nodes, settings.topology, gpus)
        found.addresses()  # every node must resolve to an address services can bind and clients reach
    except slurm_allocation.SlurmError as error:
        raise pytest.UsageError(f"--launcher=slurm: {error}") from None
    return found


def allocation_request(settings: Settings, run_label: str, needed_nodes: int) -> slurm_allocation.AllocationRequest:
    """What --slurm-alloc asks for: the plan's nodes, their GPUs for a GPU engine, and the run's name (which is how
    any process of the run finds the job again)."""
    return slurm_allocation.AllocationRequest(
        needed_nodes, f"pytest-llama4-{run_label}", settings.time, settings.partition, settings.account,
        settings.gpus_per_node if engine_for(settings.engine).needs_gpus else None, settings.slurm_exclusive,
        settings.slurm_segment)


def make_launcher(settings: Settings, run_label: str, allocation: slurm_allocation.Allocation | None,
                  needed_nodes: int) -> Launcher:
    if settings.launcher == "local":
        return LocalLauncher(run_label=run_label, tied_to_pytest=not settings.keep_deployment)
    if allocation is None:
        allocation = slurm_allocation.request(allocation_request(settings, run_label, needed_nodes))
    return SlurmLauncher(allocation, run_label, image=settings.image, mounts=settings.mounts,
                         tied_to_pytest=not settings.keep_deployment)


def needs_allocation(settings: Settings) -> bool:
    """Whether the run's deployment lives in a SLURM allocation (its launcher: slurm)."""
    return settings.launcher == "slurm"


def node_runner(settings: Settings, run_label: str, allocation: slurm_allocation.Allocation | None) -> Launcher | None:
    """What runs helper steps where the run's deployment runs, in any process of the run (an xdist worker holds no
    launcher): None for an --endpoint deployment, whose machines are not ours. It requests and releases nothing;
    `allocation` is the one the deployment runs in (launcher=slurm)."""
    if settings.launcher == "endpoint":
        return None
    if settings.launcher == "local":
        return LocalLauncher(run_label=run_label)
    if allocation is None:
        raise ValueError(f"no SLURM allocation found for run {run_label} (job name pytest-llama4-{run_label}): a "
                         "helper step needs the deployment's allocation")
    return SlurmLauncher(allocation, run_label, image=settings.image, mounts=settings.mounts)
