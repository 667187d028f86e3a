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
    except slurm_allocation.SlurmError as error:
        raise pytest.UsageError(f"--launcher=slurm: {error}") from None
    return found


def make_launcher(settings: Settings, run_label: str, allocation: slurm_allocation.Allocation | None,
                  needed_nodes: int) -> Launcher:
    if settings.launcher == "local":
        return LocalLauncher(run_label=run_label, tied_to_pytest=not settings.keep_deployment)
    if allocation is None:
        allocation = slurm_allocation.request(needed_nodes, name=f"pytest-llama4-{run_label}",
                                              partition=settings.partition, account=settings.account,
                                              time_limit=settings.time)
    return SlurmLauncher(allocation, run_label, image=settings.image, mounts=settings.mounts,
                         tied_to_pytest=not settings.keep_deployment)


def node_runner(settings: Settings, run_label: str, allocation: slurm_allocation.Allocation | None) -> Launcher | None:
    """What runs helper steps where the run's deployment runs, in any process of the run (an xdist worker holds no
    launcher): None for an --endpoint deployment, whose machines are not ours. It requests and releases nothing;
    `allocation` is the one the deployment runs in (launcher=slurm)."""
    if settings.launcher == "endpoint":
        return None
    if settings.launcher == "local":
        return LocalLauncher(run_label=run_label)
    if allocation is None:
        raise ValueError("launcher=slurm: a helper step needs the deployment's allocation")
    return SlurmLauncher(allocation, run_label, image=settings.image, mounts=settings.mounts)
