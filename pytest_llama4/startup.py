"""Bringing the run's deployment up: launched through the configured launcher, or an existing --endpoint."""

from __future__ import annotations

import time

import pytest

from . import deployment as deployment_module
from .deployment import Deployment, DeploymentError
from .launchers import make_launcher
from .launchers.allocation import SlurmError
from .report import STARTED_KEY, current_run
from .wiring import WiringError


def start_deployment(config: pytest.Config) -> Deployment:
    """Launch the planned deployment (or connect to --endpoint) and remember it in the run."""
    run = current_run(config)
    if run.settings.launcher == "endpoint":
        dep = deployment_module.connect_endpoint(run.settings, run.logs_dir)
    else:
        needed = deployment_module.plan_for(run.settings).num_nodes
        launcher = make_launcher(run.settings, run.run_id, run.allocation, needed)
        dep = deployment_module.launch(run.settings, run.run_dir, launcher)
    run.deployment = dep
    run.startup_seconds = time.monotonic() - config.stash[STARTED_KEY]
    return dep


STARTUP_ERRORS = (DeploymentError, SlurmError, WiringError)


