"""When pytest-llama4 switches on. It is a guest in shared venvs: a session gets it only by asking, in one of
these ways (the first that applies is the reason):

- `--llama4`, or `llama4 = true` in the ini file;
- any of its options on the command line (`--topology`, `--endpoint`, `--reports-dir`, ...), or any of its ini
  keys in the ini file (`topology = disagg`) or through `-o`;
- a path to collect inside the project's `suites/` (what `pytest` in the project's checkout collects by default),
  or the checkout itself;
- in an xdist worker: the controller switched it on.

The seed guide's environment variables (`MODEL_PATH`, `NUM_NODES`, ...) fill settings once it is on, but do not
switch it on: shared CI images set them for other tools too. A test that uses one of its fixtures in a session that
did not ask is a usage error saying how to ask (the xdist controller, which collects nothing, must know before
collection).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..config.paths import PROJECT_ROOT, SUITES_DIR
from ..config.settings import OPTIONS, in_ini

SWITCH = "llama4"
# The fixtures of plugin/fixtures.py that suites use (tests/test_activation.py keeps this list in step).
FIXTURES = ("llama4_settings", "llama4_engine", "deployment", "private_deployments", "launched_services", "gpu_monitor",
            "served_model", "base_url", "api", "openai_client", "profile", "perf_log", "load_progress", "tokenizer_dir",
            "container_key_verdicts", "context_window", "acceptance_log",
            "service_processes")


def add_switch(parser: pytest.Parser) -> None:
    parser.getgroup("llama4").addoption(
        f"--{SWITCH}", action="store_true", default=False,
        help="switch pytest-llama4 on in this session (any of its options, ini keys or the suites/ path does too)")
    parser.addini(SWITCH, "switch pytest-llama4 on for every session of this project", type="bool", default=False)


def requested(config: pytest.Config) -> str | None:
    """Why this session asked for pytest-llama4, or None when it did not."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return "the xdist controller's run" if "llama4_run_id" in workerinput else None
    if config.getoption(SWITCH) or config.getini(SWITCH):
        return f"--{SWITCH}"
    given = [o.flag for o in OPTIONS if config.getoption(o.dest) is not None]
    if given:
        return given[0]
    ini_keys = [o.dest for o in OPTIONS if in_ini(config, o)]
    if ini_keys:
        return f"ini key {ini_keys[0]}"
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::")[0]).resolve()
        if path == PROJECT_ROOT or path.is_relative_to(SUITES_DIR):
            return f"collects {arg}"
    return None


class Dormant:
    """Registered in sessions that did not ask: a test using one of the plugin's fixtures gets a usage error that
    says how to ask, instead of "fixture not found"."""

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        users = {name: item.nodeid for item in items for name in getattr(item, "fixturenames", ())
                 if name in FIXTURES and not _resolved(item, name)}
        if users:
            name, nodeid = next(iter(users.items()))
            raise pytest.UsageError(
                f"{nodeid} uses pytest-llama4's fixture '{name}', but pytest-llama4 is off in this session: pass "
                f"--{SWITCH} (or any of its options, e.g. --topology=agg), or set `{SWITCH} = true` in the ini file")


def _resolved(item: pytest.Item, name: str) -> bool:
    """True when a fixture of that name exists in this session (the project's own, say): then it is not ours."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and bool(info.name2fixturedefs.get(name))
