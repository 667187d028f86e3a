"""What a run records about itself, glued to pytest: settings.json and inputs/ at configure time and outcomes.json at
the end (report/replay.py), --replay-failed's selection, and provenance.json with its JUnit properties
(report/provenance.py). The report modules compute and write; this module decides when, from the session's Run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _pytest.junitxml import xml_key  # the LogXML of the process that writes junit.xml

from ..config import resolve
from ..deploy.launchers.allocation import Allocation
from ..report import provenance, replay
from .session import Run, current_run

ENVIRONMENT_KEY = pytest.StashKey[dict]()  # what the deployment's machines said, probed right after the launch


class OutcomesWriter:
    """outcomes.json at the end of the session: what --replay-failed reruns."""

    def __init__(self, run: Run, rootdir: Path) -> None:
        self.run = run
        self.rootdir = rootdir

    def pytest_sessionfinish(self) -> None:
        replay.write_outcomes(self.run.run_dir, self.run.run_id, self.rootdir, self.run.outcomes)


class FailedOnly:
    """--replay-failed: every test but those that failed or errored in the replayed run is deselected (in each
    process that collects: pytest itself, or every xdist worker)."""

    def __init__(self, run: Run, directory: Path) -> None:
        self.run = run
        self.run_id = resolve.recorded_run_id(directory)
        self.failed = replay.failed_tests(directory)

    @pytest.hookimpl(trylast=True)  # after -m / -k: the count below is what runs
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep: list[pytest.Item] = []
        dropped: list[pytest.Item] = []
        for item in items:
            (keep if replay.nodeid_key(config.rootpath, item.nodeid) in self.failed else dropped).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
        self._note(len(keep))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """The xdist controller collects nothing itself: each worker reports what it kept."""
        self._note(len(ids))

    def _note(self, selected: int) -> None:
        if any(line.startswith("--replay-failed") for line in self.run.notes):
            return
        missing = len(self.failed) - selected
        self.run.notes.append(
            f"--replay-failed: {selected} test(s) selected, those that failed or errored in run {self.run_id}"
            + (f"; {missing} of those are not collected by this command line (pass the paths that run "
               f"collected: {resolve.SETTINGS_FILE} records its command line)" if missing > 0 else ""))


def configure_replay(config: pytest.Config, run: Run) -> None:
    """From pytest_configure, in every process: record this run (the junit.xml writer only), and when it replays
    another, say so and select its failed tests."""
    if run.settings.replay_failed:
        only = FailedOnly(run, run.settings.replay)
        if not only.failed:
            pytest.exit(f"--replay-failed: no test failed or errored in run {only.run_id}, so there is nothing to "
                        "rerun (--replay alone reruns every test)", returncode=pytest.ExitCode.OK)
        config.pluginmanager.register(only, "llama4-replay-failed")
    if hasattr(config, "workerinput"):
        return
    replay.record(run.settings, run.run_id, run.run_dir, profile_path=run.profile.path if run.profile else None,
                  rootdir=config.rootpath, invocation_dir=Path(config.invocation_params.dir),
                  invocation_args=config.invocation_params.args)
    config.pluginmanager.register(OutcomesWriter(run, config.rootpath), "llama4-outcomes-file")
    if run.settings.replay:
        run.notes += replay.replay_notes(run.settings.replay)


def probe_environment(config: pytest.Config, allocation: Allocation | None) -> None:
    """Right after the launch, while the deployment's allocation is surely there: kept for the end of the session."""
    run = current_run(config)
    config.stash[ENVIRONMENT_KEY] = provenance.run_environment(run.settings, allocation, run.run_id)


class Recorder:
    """On the process that writes junit.xml: provenance.json, the JUnit properties and the summary header.
    (Under pytest-xdist that is the controller; a worker's record_testsuite_property never reaches junit.xml.)"""

    def __init__(self, run: Run) -> None:
        self.run = run

    @pytest.hookimpl(tryfirst=True)  # before junitxml's own pytest_sessionfinish writes the file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config, run = session.config, self.run
        env = (config.stash.get(ENVIRONMENT_KEY, None)
               or provenance.run_environment(run.settings, run.allocation, run.run_id))
        facts = provenance.collect(run.settings, run.run_id, run.run_dir, env)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / provenance.FILE).write_text(json.dumps(facts, indent=1))
        if (xml := config.stash.get(xml_key, None)) is not None:
            for name, value in provenance.properties(facts).items():
                xml.add_global_property(name, value)
        run.header = provenance.header(facts)
        if run.settings.replay:
            run.notes.append(provenance.replay_comparison(facts, run.settings.replay))
