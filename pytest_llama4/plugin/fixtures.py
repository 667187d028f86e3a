"""The fixtures suites use. Suites never touch a launcher: these work unchanged for every launcher."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import openai
import pytest
import requests

from ..api.client import ApiClient
from ..config.resolve import declared
from ..config.settings import Settings
from ..deploy import engine_limits, services
from ..deploy.deployment import Deployment, DeploymentError
from ..deploy.engines import engine_for
from ..deploy.engines.base import Engine
from ..measure import host_memory
from ..measure.host_memory import NO_SERVICES_OF_OURS
from ..measure.load import Progress
from ..measure.profiles import Profile
from ..measure.results import AcceptanceResult, ScenarioResult
from ..measure.telemetry import GpuMonitor, NoGpu, monitor_for
from . import properties, waivers
from .session import Run, current_run
from .startup import STARTUP_ERRORS, private_deployment, start_deployment, terminal_line
from .xdist import ask_controller


@pytest.fixture(scope="session")
def llama4_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved run settings (topology, engine, served model, ...)."""
    return current_run(pytestconfig).settings


@pytest.fixture(scope="session")
def llama4_engine(llama4_settings: Settings) -> Engine:
    """What the run's engine is (deploy/engines/): whether its text is deterministic, whether it drafts tokens, its
    config format, its default engine configs. Suites ask it instead of comparing engine names."""
    return engine_for(llama4_settings.engine)


@pytest.fixture(scope="session")
def deployment(pytestconfig: pytest.Config, record_testsuite_property) -> Iterator[Deployment]:
    """The deployment under test: launched once per session (or an --endpoint), stopped at the end.
    Under pytest-xdist the controller launches it once for all workers (pytest_llama4.plugin.xdist)."""
    run = current_run(pytestconfig)
    shared = getattr(pytestconfig, "workerinput", {}).get("llama4_shared")
    try:
        dep = _from_controller(run) if shared else start_deployment(pytestconfig)
    except STARTUP_ERRORS as error:
        pytest.exit(f"pytest-llama4: {error}", returncode=pytest.ExitCode.TESTS_FAILED)
    record_testsuite_property("deployment", dep.describe())
    if dep.detected is not None:
        record_testsuite_property("detected", dep.detected.description)
    yield dep
    if not shared and not run.settings.keep_deployment:
        dep.stop()


def _from_controller(run: Run) -> Deployment:
    """The controller's deployment as a worker sees it (Deployment.hand_over); the controller watches and stops it."""
    answer = ask_controller(run.run_dir, run.settings.startup_budget + 60)
    if "error" in answer:
        raise DeploymentError(answer["error"])
    return Deployment.taken_over(run.settings, answer)


@pytest.fixture(scope="session")
def private_deployments(llama4_settings: Settings, llama4_engine: Engine, pytestconfig: pytest.Config
                        ) -> Callable[..., AbstractContextManager[Deployment]]:
    """`with private_deployments("name", speedup_ratio=1) as dep:` a second deployment of this run's settings
    with some changed, for checks that must disturb or re-speed one. Engines that need no GPU only: a cluster
    engine's second deployment would need GPUs of its own."""
    if not llama4_settings.launches or llama4_engine.needs_gpus:
        pytest.skip(f"needs a second, private deployment, which only a launched engine without GPUs (--engine=mocker) "
                    f"can start beside the one under test (--engine={llama4_settings.engine} "
                    f"--launcher={llama4_settings.launcher})")
    return functools.partial(private_deployment, pytestconfig)


@pytest.fixture(scope="session")
def launched_services(pytestconfig: pytest.Config, deployment: Deployment) -> list[services.ServiceRecord]:
    """What the plugin launched (reports/<run-id>/services.json): each service's role, nodes, log and metrics port.
    Under pytest-xdist this is how a worker reaches the controller's services."""
    records = services.read(current_run(pytestconfig).run_dir)
    if deployment.plan is None or not records:
        pytest.skip(NO_SERVICES_OF_OURS)
    return records


@pytest.fixture
def gpu_monitor(pytestconfig: pytest.Config, deployment: Deployment) -> Iterator[GpuMonitor]:
    """Per-GPU memory and utilisation on every node of the deployment during the test (reports/<run-id>/gpu.csv);
    skips with the exact reason where there is no GPU to sample."""
    run = current_run(pytestconfig)
    with contextlib.ExitStack() as stack:
        try:
            monitor = stack.enter_context(monitor_for(run.node_runner(), run.run_dir))
        except NoGpu as reason:
            pytest.skip(str(reason))
        yield monitor


@pytest.fixture(scope="session")
def service_processes(pytestconfig: pytest.Config, deployment: Deployment
                      ) -> Iterator[host_memory.ProcessSource | str]:
    """The launched services' processes, found by the run label each one carries (on SLURM through one helper step
    per node), or why they cannot be read (a skip reason)."""
    names = frozenset(s.name for s in deployment.plan.services) if deployment.plan else frozenset()
    run = current_run(pytestconfig)
    try:
        source = host_memory.process_source(run.node_runner(), run.run_dir, names)
    except ValueError as error:
        source = str(error)
    yield source
    if not isinstance(source, str):
        source.close()


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


@pytest.fixture(scope="session")
def record_testsuite_property(pytestconfig: pytest.Config) -> Callable[[str, object], None]:
    """pytest's own, made to work under pytest-xdist: a worker's properties reach the controller's junit.xml."""
    return functools.partial(properties.record, current_run(pytestconfig).run_dir)


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
def perf_log(pytestconfig: pytest.Config) -> Callable[[ScenarioResult], None]:
    """Record one scenario's results; all of them are written to reports/<run-id>/perf.json at the end."""
    return current_run(pytestconfig).record_perf


@pytest.fixture(scope="session")
def acceptance_log(pytestconfig: pytest.Config) -> Callable[[AcceptanceResult], None]:
    """Record the speculative suite's acceptance measurement; it is written to perf.json and the summary."""
    return current_run(pytestconfig).record_acceptance


@pytest.fixture(scope="session")
def container_key_verdicts(request: pytest.FixtureRequest, llama4_settings: Settings, llama4_engine: Engine
                           ) -> dict[str, dict]:
    """Engine config (as the container sees its path) -> the container's TensorRT-LLM verdict on its keys, from
    this run's preflight. Only with an image, where the container's release is not the one our key list comes from:
    then it waits for the deployment's start, whose preflight builds TorchLlmArgs before any model loads (a key it
    rejects stops the launch there). Empty otherwise, or where TensorRT-LLM did not import in the container."""
    if not (llama4_settings.image and llama4_settings.launches and llama4_engine.config_format == "llm-api-yaml"):
        return {}
    report = request.getfixturevalue("deployment").run_dir / "preflight.json"
    nodes = json.loads(report.read_text())["nodes"] if report.is_file() else {}
    return {path: verdict for facts in nodes.values() for path, verdict in facts.get("validated", {}).items()
            if verdict.get("validator")}


@pytest.fixture(scope="session")
def context_window(deployment: Deployment, llama4_settings: Settings) -> int | str:
    """The longest sequence (prompt + output, in tokens) the deployment admits, or why it is not known: what the
    server says (`max_model_len` in /v1/models, as vLLM reports it), else the engine configs it runs with."""
    try:
        listed = requests.get(f"{deployment.base_url}/v1/models", timeout=10).json().get("data") or []
    except (requests.RequestException, ValueError, AttributeError):
        listed = []
    said = [m.get("max_model_len") for m in listed if isinstance(m, dict) and m.get("id") == deployment.served_model]
    if said and isinstance(said[0], int):
        return said[0]
    limits = engine_limits.for_settings(llama4_settings)
    if isinstance(limits, str):
        return f"the context window is unknown: /v1/models does not say it, and {limits}"
    if limits.max_seq_len is None:
        return (f"the context window is unknown: /v1/models does not say it, and {limits.source} sets no "
                "max_seq_len (the model's own limit applies)")
    return limits.max_seq_len


@pytest.fixture(scope="session")
def load_progress(pytestconfig: pytest.Config, llama4_settings: Settings) -> Progress | None:
    """Progress lines for a measuring scenario (pass it to run_load): on the terminal past output capture, every
    --progress-interval seconds; none under -q. Measuring tests run one at a time, so under xdist too a scenario's
    lines come once, from the process that runs it."""
    if pytestconfig.get_verbosity() < 0 or llama4_settings.progress_interval <= 0:
        return None
    return Progress(terminal_line(pytestconfig), llama4_settings.progress_interval)


@pytest.fixture(scope="session")
def tokenizer_dir(llama4_settings: Settings, llama4_engine: Engine) -> Path | None:
    """The served model's tokenizer, when it is on this machine: prompts are then token-exact."""
    if llama4_settings.model:
        local = Path(llama4_settings.model)
        return local if (local / "tokenizer.json").is_file() else None
    return llama4_engine.default_model()


EXCLUSIVE_MARKERS = ("throughput", "memory", "exclusive")


@pytest.fixture(autouse=True)
def _llama4_run_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """A readers-writer lock across every process of the run (xdist workers share the run directory):
    measuring and disruptive tests hold it exclusively, so they never overlap another test; the rest share it."""
    exclusive = any(request.node.get_closest_marker(name) for name in EXCLUSIVE_MARKERS)
    run_dir = current_run(request.config).run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".run.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _llama4_known_deviations(request: pytest.FixtureRequest, llama4_settings: Settings) -> None:
    """The waivers of this test that name the deployment's engine (for an unnamed --endpoint, the one it certainly
    says it is) and cover its Dynamo release (known once it started: preflight probes it; an --endpoint's only when
    --dynamo-version says it)."""
    if not waivers.candidates(request.node):
        return
    dep = request.getfixturevalue("deployment") if "deployment" in request.fixturenames else None
    settings = dep.settings if dep is not None else llama4_settings
    engine = engine_for(dep.waived_engine if dep is not None else settings.engine)
    release = settings.dynamo_version
    if engine.runs_dynamo and not settings.launches and declared(request.config, "dynamo_version") is None:
        release = None
    waivers.apply(request, engine.name, release, engine.runs_dynamo)
