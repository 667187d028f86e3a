"""The disagg suite on the real local stack: it passes on a healthy disaggregated deployment, skips on agg saying
why, fails each check for its own reason when the prefill worker is alive but bypassed, and fails promptly once
the deployment has lost its prefill worker."""

from __future__ import annotations

import re
import textwrap
import time

import pytest

from tests.test_integration import SUITES, assert_nothing_left, run_ids, run_pytest

pytestmark = pytest.mark.integration

# Kills the run's prefill worker once the deployment is up, found by the labels every launched process carries.
# Under xdist the test process holds no handle of the deployment (the controller does), so only the suite's own
# checks can notice: the plugin's watchdog is out of the picture.
KILL_PREFILL_CONFTEST = textwrap.dedent("""
    import os, signal
    import pytest
    from pytest_llama4.deploy.procscan import Scanner
    from pytest_llama4.plugin.session import current_run

    @pytest.fixture(autouse=True, scope="session")
    def kill_prefill(deployment, pytestconfig):
        for pid, service, _ in Scanner(current_run(pytestconfig).run_id).scan():
            if service == "prefill-0":
                os.kill(pid, signal.SIGKILL)
""")


# A disaggregated deployment whose prefill worker is up but never used, as a launch script gets it wrong: the
# decode worker starts without its disaggregation mode (so it registers as an aggregated worker that prefills
# for itself) and the prefill worker serves another model name. Every process is real and healthy; the frontend
# answers every request from the decode worker alone.
BYPASS_PREFILL_CONFTEST = textwrap.dedent("""
    import dataclasses
    from pytest_llama4.config.topology import DECODE, PREFILL
    from pytest_llama4.deploy.engines import dynamo_mocker

    command, engine_args = dynamo_mocker.worker_command, dynamo_mocker.engine_args

    def bypassed_command(service, **kwargs):
        launched = command(service, **kwargs)
        argv = list(launched.argv)
        if service.role == DECODE:
            at = argv.index("--disaggregation-mode")
            del argv[at:at + 2]
        if service.role == PREFILL:
            argv[argv.index("--model-name") + 1] = "a-model-nobody-asks-for"
        return dataclasses.replace(launched, argv=tuple(argv))

    def bypassed_args(service, speedup_ratio):
        args = engine_args(service, speedup_ratio)
        return {**args, "worker_type": "aggregated"} if service.role == DECODE else args

    dynamo_mocker.worker_command, dynamo_mocker.engine_args = bypassed_command, bypassed_args
""")


def test_disagg_suite_passes_on_the_embedded_default(pytester, tmp_path):
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, str(SUITES / "test_disagg.py"), "--topology=disagg", "-rA")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=3)
    assert_nothing_left(reports)


def test_disagg_suite_skips_an_agg_deployment_and_says_why(pytester, tmp_path):
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, str(SUITES / "test_disagg.py"), "--topology=agg", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*checks --topology=disagg deployments; this run is agg*"])
    (run_id,) = run_ids(reports)
    assert not (reports / run_id / "services.json").exists(), "a skipped suite must not start a deployment"


def test_disagg_suite_fails_promptly_when_the_prefill_worker_is_gone(pytester, tmp_path):
    reports = tmp_path / "reports"
    pytester.makeconftest(KILL_PREFILL_CONFTEST)
    (pytester.path / "test_disagg.py").write_text((SUITES / "test_disagg.py").read_text())
    started = time.monotonic()
    result = run_pytest(pytester, reports, "test_disagg.py", "--topology=disagg", "-n", "1", "-rA")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=2, passed=1)
    output = result.stdout.str()
    assert "FAILED test_disagg.py::test_every_request_reaches_prefill_and_decode" in output
    assert "FAILED test_disagg.py::test_prefill_and_decode_counters_move_with_traffic" in output
    assert "/v1/chat/completions (stream=False) answered HTTP 500" in output, output[-3000:]
    assert elapsed < 90, f"a deployment without its prefill worker held the suite up for {elapsed:.0f}s"
    assert_nothing_left(reports)


def test_each_disagg_check_fails_for_its_reason_when_prefill_is_alive_but_bypassed(pytester, tmp_path):
    """The case the suite exists for: both workers up and registered, yet the decode worker prefills every request
    itself. Request tracing, the counter delta and the loss check must each fail, and say so."""
    reports = tmp_path / "reports"
    pytester.makeconftest(BYPASS_PREFILL_CONFTEST)
    (pytester.path / "test_disagg.py").write_text((SUITES / "test_disagg.py").read_text())
    result = run_pytest(pytester, reports, "test_disagg.py", "--topology=disagg", "-p", "no:randomly")
    result.assert_outcomes(failed=3)
    output = result.stdout.str()
    for kind in ("/v1/chat/completions stream=False", "/v1/chat/completions stream=True",
                 "/v1/completions stream=False", "/v1/completions stream=True"):
        assert f": {kind}: no prefill worker logged it" in output, output[-3000:]
    assert "4 requests sent; dynamo_component_requests_total moved by 0 on the prefill side and 4 on the decode " \
        "side" in output
    assert "with every prefill worker killed, requests still completed" in output
    assert not re.search(r"answered HTTP \d", output), "a bypassed prefill must not fail the suite on HTTP errors"
    assert_nothing_left(reports)
