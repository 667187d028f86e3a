"""pytest hook wiring: options, markers, settings, report paths, waivers, watchdog, teardown on signals."""

from __future__ import annotations

import signal
import time

import pytest

from . import settings as settings_module
from . import waivers
from .deployment import plan_for
from .launchers import slurm_preflight
from .report import RUN_KEY, STARTED_KEY, Run, current_run, new_run_id

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
    run = current_run(config)
    run.suites = sorted({m.name for item in items for m in item.iter_markers() if m.name in MARKERS})
    settings = run.settings
    if settings.waivers is not None:
        waivers.apply(items, waivers.load(settings.waivers), settings.engine)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A deployment service that died during a test fails that test, with the service's log tail."""
    deployment = current_run(item.config).deployment
    try:
        return (yield)
    finally:
        if deployment is not None:
            deployment.raise_if_died()


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

