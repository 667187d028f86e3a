"""pytest hook wiring: options, markers, settings, report paths, waivers, watchdog, teardown on signals."""

from __future__ import annotations

import json
import signal
import time

import pytest

from . import profiles, waivers
from . import settings as settings_module
from .deployment import plan_for
from .launchers import slurm_preflight
from .report import RUN_KEY, STARTED_KEY, Run, current_run, new_run_id
from .summary import write_summary

pytest_plugins = ["pytest_llama4.fixtures"]

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
}


def pytest_addoption(parser: pytest.Parser) -> None:
    settings_module.add_options(parser)


@pytest.hookimpl(tryfirst=True)  # before junitxml's pytest_configure reads the report path
def pytest_configure(config: pytest.Config) -> None:
    config.stash[STARTED_KEY] = time.monotonic()
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    if config.option.help:
        return  # `pytest --help` must work even when the environment holds a bad setting
    run_id = getattr(config, "workerinput", {}).get("llama4_run_id") or new_run_id()
    run = Run(settings_module.resolve(config), run_id)
    config.stash[RUN_KEY] = run
    run.profile = profiles.resolve(run.settings.profile, run.settings.profile_file)
    if run.profile and run.profile.engines and run.settings.engine not in run.profile.engines:
        raise pytest.UsageError(f"profile {run.profile.name} sets limits for --engine "
                                f"{'/'.join(run.profile.engines)}, not {run.settings.engine}: pick another --profile")
    if run.settings.launcher == "slurm":
        run.allocation = slurm_preflight(run.settings, plan_for(run.settings).num_nodes)
    if not hasattr(config, "workerinput") and not config.option.xmlpath:
        run.junit_path = run.run_dir / "junit.xml"
        config.option.xmlpath = str(run.junit_path)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(run_id), "llama4-xdist")
    _stop_on_sigterm()


class XdistHooks:
    """Every xdist worker writes into the controller's run directory."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def pytest_configure_node(self, node) -> None:
        node.workerinput["llama4_run_id"] = self.run_id


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `scancel`) takes the same teardown path as Ctrl-C instead of killing pytest cold."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = current_run(config).settings
    if settings.waivers is not None:
        waivers.apply(items, waivers.load(settings.waivers), settings.engine)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The suites that will run (after -m / -k deselection), for the terminal summary."""
    current_run(session.config).suites = sorted(
        {m.name for item in session.items for m in item.iter_markers() if m.name in MARKERS})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A deployment service that died during a test fails that test, with the service's log tail."""
    deployment = current_run(item.config).deployment
    try:
        return (yield)
    finally:
        if deployment is not None:
            deployment.raise_if_died()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The throughput suite runs once per scenario of the profile that fits this topology."""
    if "profile_scenario" not in metafunc.fixturenames:
        return
    run = current_run(metafunc.config)
    scenarios = run.profile.scenarios_for(run.settings.topology) if run.profile else []
    if scenarios:
        metafunc.parametrize("profile_scenario", scenarios, ids=[s.scenario.name for s in scenarios])
        return
    reason = (f"profile {run.profile.name} has no scenario for --topology={run.settings.topology}" if run.profile
              else f"no throughput profile for --engine={run.settings.engine}: pass --profile or --profile-file")
    metafunc.parametrize("profile_scenario", [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
                         ids=["no-scenario"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Remember each test's outcome (call phase, or a setup that did not pass) for the summary page."""
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when == "setup" and report.failed:
            outcome = "error"
        suite = next((m.name for m in item.iter_markers() if m.name in MARKERS), "other")
        current_run(item.config).outcomes.append(
            {"nodeid": report.nodeid, "outcome": outcome, "duration": report.duration, "suite": suite})
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """perf.json and summary.html, written by the controller once every test has reported."""
    run = current_run(session.config)
    if hasattr(session.config, "workerinput") or run.junit_path is None:
        return
    perf_path = run.write_perf()
    if run.deployment is not None or perf_path is not None:
        perf = json.loads(perf_path.read_text()) if perf_path else None
        run.summary_path = write_summary(run.run_dir, title=f"pytest-llama4 run {run.run_id}",
                                         settings=run.settings.as_properties(),
                                         deployment=run.deployment.describe() if run.deployment else None,
                                         outcomes=run.outcomes, perf=perf)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last line of defence: whatever path the session took, nothing launched outlives pytest."""
    run = config.stash.get(RUN_KEY, None)
    if run is not None and run.deployment is not None and not run.settings.keep_deployment:
        run.deployment.stop()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    lines = current_run(config).summary_lines()
    if lines:
        terminalreporter.section("pytest-llama4")
        for line in lines:
            terminalreporter.write_line(line)

