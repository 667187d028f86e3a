"""The fixtures suites use. Suites never touch a launcher: these work unchanged for every launcher."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from . import deployment as deployment_module
from .client import ApiClient
from .deployment import Deployment, DeploymentError
from .fixture_model import ensure_model_dir
from .launchers import make_launcher
from .launchers.allocation import SlurmError
from .profiles import Profile
from .report import STARTED_KEY, current_run
from .settings import Settings
from .wiring import WiringError


@pytest.fixture(scope="session")
def llama4_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved run settings (topology, engine, served model, ...)."""
    return current_run(pytestconfig).settings


@pytest.fixture(scope="session")
def deployment(pytestconfig: pytest.Config, record_testsuite_property) -> Iterator[Deployment]:
    """The deployment under test: launched once per session (or an --endpoint), stopped at the end."""
    run = current_run(pytestconfig)
    started = time.monotonic()
    try:
        if run.settings.launcher == "endpoint":
            dep = deployment_module.connect_endpoint(run.settings, run.logs_dir)
        else:
            needed = deployment_module.plan_for(run.settings).num_nodes
            launcher = make_launcher(run.settings, run.run_id, run.allocation, needed)
            dep = deployment_module.launch(run.settings, run.run_dir, launcher)
    except (DeploymentError, SlurmError, WiringError) as error:
        pytest.exit(f"pytest-llama4: {error}", returncode=pytest.ExitCode.TESTS_FAILED)
    run.deployment = dep
    run.startup_seconds = time.monotonic() - pytestconfig.stash[STARTED_KEY]
    record_testsuite_property("deployment", dep.describe())
    record_testsuite_property("deployment_startup_seconds", f"{time.monotonic() - started:.2f}")
    yield dep
    if not run.settings.keep_deployment:
        dep.stop()


@pytest.fixture(scope="session")
def served_model(deployment: Deployment) -> str:
    return deployment.served_model


@pytest.fixture(scope="session")
def base_url(deployment: Deployment) -> str:
    return deployment.base_url


@pytest.fixture(scope="session")
def api(deployment: Deployment) -> ApiClient:
    """Raw HTTP access to the deployment's OpenAI API (malformed bodies, headers, SSE framing)."""
    return ApiClient(deployment.base_url, deployment.served_model)


@pytest.fixture(scope="session")
def openai_client(deployment: Deployment) -> openai.OpenAI:
    """The official OpenAI SDK pointed at the deployment: what users' applications will run."""
    return openai.OpenAI(base_url=f"{deployment.base_url}/v1", api_key="not-used", max_retries=0, timeout=60)


@pytest.fixture(autouse=True, scope="session")
def _llama4_run_properties(pytestconfig: pytest.Config, record_testsuite_property) -> None:
    """Every run's settings go into the JUnit report as testsuite properties."""
    run = current_run(pytestconfig)
    record_testsuite_property("run_id", run.run_id)
    for name, value in run.settings.as_properties().items():
        record_testsuite_property(name, value)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    """The hardware profile whose floors and ceilings the throughput suite gates on."""
    found = current_run(pytestconfig).profile
    if found is None:
        pytest.skip(f"no throughput profile for --engine={current_run(pytestconfig).settings.engine}: pass "
                    "--profile=NAME (fixtures/profiles/) or --profile-file=PATH")
    return found


@pytest.fixture(scope="session")
def perf_log(pytestconfig: pytest.Config) -> list[dict]:
    """Scenario results of this run; written to reports/<run-id>/perf.json at the end."""
    return current_run(pytestconfig).perf


@pytest.fixture(scope="session")
def tokenizer_dir(llama4_settings: Settings) -> Path | None:
    """The served model's tokenizer, when it is on this machine: prompts are then token-exact."""
    if llama4_settings.model:
        local = Path(llama4_settings.model)
        return local if (local / "tokenizer.json").is_file() else None
    return ensure_model_dir() if llama4_settings.engine == "mocker" else None
