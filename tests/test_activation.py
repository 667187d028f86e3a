"""pytest-llama4 is a guest: a session that does not ask for it runs as if it were not installed."""

from __future__ import annotations

import inspect
import textwrap

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

from pytest_llama4.plugin import activation

# Written by a conftest at the end of the session: what pytest-llama4 left in the process.
PROBE = textwrap.dedent("""
    import json, signal, sys

    def pytest_unconfigure(config):
        with open("probe.json", "w") as out:
            json.dump({"modules": sorted(m for m in sys.modules if m.startswith("pytest_llama4")),
                       "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                       "plugins": sorted(n for n, _ in config.pluginmanager.list_name_plugin() if "llama4" in n),
                       "xmlpath": config.option.xmlpath}, out)
""")
# What the entry point itself needs to decide: the options table and the switch, nothing that starts anything.
DORMANT_MODULES = ["pytest_llama4", "pytest_llama4.config", "pytest_llama4.config.paths",
                   "pytest_llama4.config.settings", "pytest_llama4.config.topology", "pytest_llama4.plugin",
                   "pytest_llama4.plugin.activation"]


def _probe(pytester: pytest.Pytester) -> dict:
    import json

    return json.loads((pytester.path / "probe.json").read_text())


def test_an_unrelated_session_runs_as_if_the_plugin_were_not_installed(pytester):
    pytester.makeconftest(PROBE)
    pytester.makepyfile("def test_x():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "pytest-llama4" not in result.stdout.str()
    assert not (pytester.path / "reports").exists()
    probe = _probe(pytester)
    assert probe["modules"] == DORMANT_MODULES
    assert probe["plugins"] == ["llama4", "llama4-dormant"]
    assert probe["sigterm_default"] and probe["xmlpath"] is None


def test_the_switch_turns_it_on(pytester):
    pytester.makeconftest(PROBE)
    pytester.makepyfile("def test_x(llama4_settings):\n    assert llama4_settings.topology == 'agg'\n")
    result = pytester.runpytest_subprocess("--llama4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pytest-llama4*", "report: *reports/*junit.xml*"])
    probe = _probe(pytester)
    assert "llama4-session" in probe["plugins"] and not probe["sigterm_default"]
    assert list((pytester.path / "reports").glob("*/junit.xml"))


@pytest.mark.parametrize(("ini", "args"), [("llama4 = true", []), ("topology = disagg", []),
                                           ("", ["-o", "served_model_name=x"]), ("", ["--reports-dir=out"])],
                         ids=["switch-ini", "option-ini", "option-override", "option-flag"])
def test_any_of_its_options_or_ini_keys_asks_for_it(pytester, ini, args):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(llama4_settings):\n    pass\n")
    pytester.runpytest(*args, "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_its_fixtures_in_a_session_that_did_not_ask_are_a_usage_error_saying_how(pytester):
    pytester.makepyfile("def test_x(deployment):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x uses pytest-llama4's fixture 'deployment', but pytest-llama4 is off in "
                                 "this session: pass --llama4*"])


def test_a_project_fixture_of_the_same_name_is_left_alone(pytester):
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef api():\n    return 'theirs'\n")
    pytester.makepyfile("def test_x(api):\n    assert api == 'theirs'\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_fixture_list_matches_the_fixtures_module():
    from pytest_llama4.plugin import fixtures

    public = {name for name, value in inspect.getmembers(fixtures)
              if isinstance(value, FixtureFunctionDefinition) and not name.startswith("_")}
    assert sorted(public - {"record_testsuite_property"}) == sorted(activation.FIXTURES)
