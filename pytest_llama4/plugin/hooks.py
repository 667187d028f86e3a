"""The hooks of an active pytest-llama4 session: settings, report paths, waivers, watchdog, teardown on signals.
Registered by `activate` only in sessions that asked for pytest-llama4 (plugin/activation.py)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping

import pytest

from ..config.resolve import declared, resolve
from ..deploy import engine_limits, engines, interrupts, launchers, preflight
from ..deploy.launchers import janitor
from ..deploy.launchers.allocation import SlurmError
from ..deploy.readiness import CONNECTION_ERRORS, answers
from ..measure import profiles
from ..measure.profiles import ProfileScenario
from ..report import dryrun
from ..report.summary import write_summary
from . import properties, recording, waivers
from .session import RUN_KEY, STARTED_KEY, Run, current_run, new_run_id
from .startup import start_deployment
from .xdist import SharedDeploymentHost

# Defaults the run decides, so it must know whether the user gave them (an endpoint's engine is unknown; trtllm-serve
# serves under its model path; a replay gives them all).
ENGINE_DEFAULTED = ("startup_timeout", "engine", "served_model_name")
MARKERS = {
    "schema": "OpenAI response schemas and semantics",
    "streaming": "server-sent-event streaming",
    "errors": "bad input answered with clear 4xx errors",
    "throughput": "throughput floors (runs alone)",
    "memory": "memory limits (runs alone)",
    "speculative": "speculative decoding acceptance",
    "disagg": "disaggregated serving checks",
    "config": "engine config checks",
    "slow": "takes more than a few seconds",
    "gpu": "needs GPU telemetry",
    "exclusive": "runs alone on the deployment (it may disturb other tests)",
}


def activate(config: pytest.Config) -> None:
    """Switch pytest-llama4 on for this session (this module is registered as its plugin): from the entry point's
    pytest_configure, before junitxml's pytest_configure reads the report path."""
    config.stash[STARTED_KEY] = time.monotonic()
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.pluginmanager.import_plugin("pytest_llama4.plugin.fixtures")
    run_id = getattr(config, "workerinput", {}).get("llama4_run_id") or new_run_id()
    resolved = resolve(config)
    given = {name for name in ENGINE_DEFAULTED if resolved.replay or declared(config, name) is not None}
    run = Run(launchers.settle(engines.settle(resolved, given)), run_id)
    config.stash[RUN_KEY] = run
    run.profile = profiles.resolve(run.settings.profile, run.settings.profile_file)
    if run.profile and run.profile.engines and run.settings.engine not in run.profile.engines:
        raise pytest.UsageError(f"profile {run.profile.name} sets limits for --engine "
                                f"{'/'.join(run.profile.engines)}, not {run.settings.engine}: pick another --profile")
    preflight.skipped(run.settings)  # an unknown check name is a usage error now, not at launch
    if run.settings.dry_run:
        dryrun.exit_with_plan(run.settings, run.run_id, run.run_dir,
                              release_assumed=declared(config, "dynamo_version") is None)
    run.allocation = launchers.allocation_at_configure(run.settings)
    if launchers.needs_allocation(run.settings) and not hasattr(config, "workerinput"):
        _clean_up_after_dead_runs(config, run)
    if not hasattr(config, "workerinput") and not config.option.xmlpath:
        run.junit_path = run.run_dir / "junit.xml"
        config.option.xmlpath = str(run.junit_path)
    recording.configure_replay(config, run)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(OutcomeRecorder(run), "llama4-outcomes")
        config.pluginmanager.register(properties.JunitMerger(run.run_dir), "llama4-properties")
        config.pluginmanager.register(recording.Recorder(run), "llama4-provenance")
    if config.pluginmanager.hasplugin("xdist"):
        host = _host_for_workers(config, run)
        config.pluginmanager.register(XdistHooks(run_id, shared=host is not None), "llama4-xdist")
    interrupts.install()


def _clean_up_after_dead_runs(config: pytest.Config, run: Run) -> None:
    """On SLURM, before anything starts: cancel what the user's dead runs left (and say so), then keep this run's
    own record fresh until the session ends, so that a later run can clean up after this one if it dies."""
    try:
        leftovers, _ = janitor.find()
        reaped = janitor.reap(leftovers)
        janitor.forget_dead_runs()
    except SlurmError as error:
        reaped = [f"could not look for leftovers of dead runs: {error}"]
    for line in reaped:
        print(f"pytest-llama4: {line}", file=sys.stderr, flush=True)
    run.notes += [f"before starting: {line}" for line in reaped]
    stack = contextlib.ExitStack()
    stack.enter_context(janitor.heartbeat(run.run_id, kept=run.settings.keep_deployment))
    config.add_cleanup(stack.close)


class XdistHooks:
    """Every xdist worker writes into the controller's run directory and uses the controller's deployment."""

    def __init__(self, run_id: str, shared: bool) -> None:
        self.run_id = run_id
        self.shared = shared

    def pytest_configure_node(self, node) -> None:
        node.workerinput["llama4_run_id"] = self.run_id
        node.workerinput["llama4_shared"] = self.shared


def _host_for_workers(config: pytest.Config, run: Run) -> SharedDeploymentHost | None:
    """On the xdist controller (-n N): host the one deployment every worker will use."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None) or \
            config.getoption("dist", "no") == "no":
        return None

    def start() -> dict:
        return start_deployment(config).hand_over()

    run.shared_host = SharedDeploymentHost(run.run_dir, start)
    run.shared_host.open()
    return run.shared_host


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = current_run(config).settings
    if settings.waivers is not None:
        waivers.mark_candidates(items, waivers.load(settings.waivers))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The suites that will run (after -m / -k deselection), for the terminal summary."""
    current_run(session.config).suites = sorted(
        {m.name for item in session.items for m in item.iter_markers() if m.name in MARKERS})


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C must end the run with status 2. Python 3.11 can leave a traceback entry without a line number (an
    interrupt landing on an instruction that has none), on which pytest's own report of the interrupt fails
    (TypeError in `lineno`, pytest-dev/pytest-xdist#1196) and the run ends in an internal error, status 1: leave
    such entries out of the report."""
    excinfo.traceback = excinfo.traceback.filter(_has_line_number)


def _has_line_number(entry) -> bool:
    try:
        entry.lineno  # noqa: B018 (the property computes tb_lineno - 1, which fails on None)
    except TypeError:
        return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Once the deployment stopped answering, the remaining tests that need it fail at once."""
    interrupts.raise_if_received()
    gone = current_run(item.config).unreachable
    if gone and "deployment" in getattr(item, "fixturenames", ()):
        pytest.fail(f"not run against the deployment: it {gone}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A deployment service that died during a test fails that test, with the service's log tail; a test that
    lost its connection checks whether the deployment still answers at all."""
    interrupts.raise_if_received()
    run = current_run(item.config)
    try:
        return (yield)
    except CONNECTION_ERRORS as error:
        if run.deployment is not None and not answers(run.deployment.base_url):
            run.unreachable = f"stopped answering during {item.nodeid} ({type(error).__name__})"
        raise
    finally:
        if run.deployment is not None:
            run.deployment.raise_if_died()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The fixtures parametrized from the run's settings at collection time, so that suites never read session
    state: `profile_scenario`, `config_role`, `stress_prompt_tokens`. Nothing to run is one skipped case that
    says why."""
    run = current_run(metafunc.config)
    for name, cases in COLLECTION_PARAMETERS.items():
        if name in metafunc.fixturenames:
            found = cases(run)
            if isinstance(found, str):
                metafunc.parametrize(name, [pytest.param(None, marks=pytest.mark.skip(reason=found))], ids=["none"])
            else:
                metafunc.parametrize(name, list(found.values()), ids=list(found))


def _profile_scenarios(run: Run) -> dict[str, ProfileScenario] | str:
    """The throughput suite runs once per scenario of the profile that fits this topology."""
    scenarios = run.profile.scenarios_for(run.settings.topology) if run.profile else []
    if scenarios:
        return {s.scenario.name: s for s in scenarios}
    return (f"profile {run.profile.name} has no scenario for --topology={run.settings.topology}" if run.profile
            else f"no throughput profile for --engine={run.settings.engine}: pass --profile or --profile-file")


def _config_roles(run: Run) -> dict[str, str]:
    """The config suite lints each worker role's engine config."""
    return {"agg": "agg"} if run.settings.topology == "agg" else {"prefill": "prefill", "decode": "decode"}


def _stress_prompt_tokens(run: Run) -> dict[str, int] | str:
    """The memory suite's stress case runs once per prompt length the engine config in use calls for."""
    limits = engine_limits.for_settings(run.settings)
    if isinstance(limits, str):
        return limits
    cases = engine_limits.stress_cases(limits, engine_limits.STRESS_OUTPUT_TOKENS)
    return dict(cases) if cases else f"{limits.source} sets no max_num_tokens"


COLLECTION_PARAMETERS: dict[str, Callable[[Run], Mapping[str, object] | str]] = {
    "profile_scenario": _profile_scenarios,
    "config_role": _config_roles,
    "stress_prompt_tokens": _stress_prompt_tokens,
}


class OutcomeRecorder:
    """Each test's outcome for the summary page; on the xdist controller too, where reports arrive from workers."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and report.passed:
            return
        if report.when == "teardown" and not report.failed:
            return
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.failed:
            outcome = "error"
        suite = next((name for name in MARKERS if name in report.keywords), "other")
        self.run.outcomes.append(
            {"nodeid": report.nodeid, "outcome": outcome, "duration": report.duration, "suite": suite})


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """perf.json and summary.html, written by the controller once every test has reported."""
    run = current_run(session.config)
    if hasattr(session.config, "workerinput") or run.junit_path is None:
        return
    perf = run.write_perf()
    if run.deployment is not None or perf is not None:
        write_summary(run.run_dir, title=f"pytest-llama4 run {run.run_id}", settings=run.settings.as_properties(),
                      deployment=run.deployment.describe() if run.deployment else None, outcomes=run.outcomes,
                      perf=perf)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last line of defence: whatever path the session took, nothing launched outlives pytest."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if run.deployment is not None and not run.settings.keep_deployment:
        run.deployment.stop()
    if run.shared_host is not None and not run.settings.keep_deployment:
        run.shared_host.close()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    lines = current_run(config).summary_lines()
    if lines:
        terminalreporter.section("pytest-llama4")
        for line in lines:
            terminalreporter.write_line(line)

