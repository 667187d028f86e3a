"""Bringing the run's deployment up: launched through the configured launcher, or an existing --endpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..config.resolve import declared
from ..deploy import deployment as deployment_module
from ..deploy import preflight
from ..deploy.deployment import Deployment, DeploymentError
from ..deploy.launchers import make_launcher
from ..deploy.launchers.allocation import SlurmError
from . import recording
from .session import STARTED_KEY, current_run


def start_deployment(config: pytest.Config) -> Deployment:
    """Launch the planned deployment (or connect to --endpoint) and remember it in the run."""
    run = current_run(config)
    progress = terminal_line(config)
    if not run.settings.launches:
        dep = deployment_module.connect_endpoint(run.settings, run.logs_dir, progress=progress)
    else:
        needed = run.settings.plan.num_nodes
        launcher = make_launcher(run.settings, run.run_id, run.allocation, needed)
        check = functools.partial(preflight.check, run_dir=run.run_dir,
                                  declared_version=declared(config, "dynamo_version"), progress=progress)
        dep = deployment_module.launch(run.settings, run.run_dir, launcher, before_start=check, progress=progress)
        run.settings = dep.settings  # with the Dynamo release preflight found, for the report
    run.deployment = dep
    run.startup_seconds = time.monotonic() - config.stash[STARTED_KEY]
    recording.probe_environment(config, run.slurm_allocation())
    return dep


def terminal_line(config: pytest.Config) -> Callable[[str], None]:
    """Lines on the terminal now, past pytest's output capture: a deployment starts inside a fixture, whose output
    pytest would otherwise hold back until the test ends."""
    capture = config.pluginmanager.getplugin("capturemanager")

    def write(text: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(text, file=sys.stderr, flush=True)

    return write


@contextlib.contextmanager
def private_deployment(config: pytest.Config, name: str, **overrides: Any) -> Iterator[Deployment]:
    """A second, short-lived deployment of the run's settings with `overrides` (the mocker at another speed, one
    whose prefill worker a test kills), launched beside the run's own through the same launcher and always
    stopped when the block ends. Its report lands in reports/<run-id>/private/<name>/."""
    run = current_run(config)
    settings = dataclasses.replace(run.settings, http_port=0, keep_deployment=False, **overrides)
    needed = settings.plan.num_nodes
    launcher = make_launcher(settings, f"{run.run_id}-{name}", run.allocation, needed)
    dep = deployment_module.launch(settings, run.run_dir / "private" / name, launcher)
    try:
        yield dep
    finally:
        dep.stop()


STARTUP_ERRORS = (DeploymentError, SlurmError, preflight.PreflightError)


