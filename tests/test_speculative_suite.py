"""The speculative suite end to end: on the embedded default its mocker speed-up check passes and fails once the
configured speed-up is more than the deployment can show; against targets that are broken on purpose (the fault
server), the golden-file check records, passes, and catches changed text, and the acceptance check fails on an
engine that publishes no speculative-decoding counters."""

from __future__ import annotations

import json

import pytest
import yaml

from pytest_llama4.config.paths import PROJECT_ROOT
from tests.fault_server import MODEL, serve
from tests.test_integration import SUITES, assert_nothing_left, run_pytest

pytestmark = pytest.mark.integration

SPECULATIVE = str(SUITES / "test_speculative.py")
EAGLE_AGG = PROJECT_ROOT / "engine_configs" / "llama4" / "eagle" / "eagle_agg.yaml"


@pytest.mark.alone
def test_mocker_speedup_check_passes_on_the_embedded_default(pytester, tmp_path):
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, SPECULATIVE, "--topology=disagg", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*the mocker does not draft tokens (engine=mocker)*",
                                 "*the mocker's tokens are random ids*"])
    assert_nothing_left(reports)


@pytest.mark.alone
def test_mocker_speedup_short_of_the_profile_fails(pytester, tmp_path):
    """The check measures the speed-up, not the setting: a profile asking for twice the configured ratio (10x at
    ratio 5, where 4.3-4.7x shows) must fail with both latencies. (Very high ratios make no stable failing case:
    the frontend sets the pace there and the measured ratio swings.)"""
    profile = yaml.safe_load((PROJECT_ROOT / "fixtures" / "profiles" / "cpu-mocker.yaml").read_text())
    profile["speculative"]["decode_speedup_tolerance"] = 2.0
    demanding = tmp_path / "demanding.yaml"
    demanding.write_text(yaml.safe_dump(profile))
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, SPECULATIVE, "--topology=agg", f"--profile-file={demanding}",
                        "-k", "speedup")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the mocker runs decode 5x faster than at ratio 1, but the mean inter-token "
                                 "latency is only *x shorter (* ms against * ms); the profile cpu-mocker asks for "
                                 "at least 2 of the configured speed-up*"])
    assert_nothing_left(reports)


def run_against_fault_server(pytester, tmp_path, fault, *args):
    server = serve(fault)
    try:
        return run_pytest(pytester, tmp_path / "reports", SPECULATIVE, f"--endpoint={server.url}",
                          "--engine=trtllm-serve", f"--served-model-name={MODEL}", "--startup-timeout=15",
                          "-rs", *args)
    finally:
        server.shutdown()
        server.server_close()


def test_golden_file_is_recorded_then_compared(pytester, tmp_path):
    path = tmp_path / "greedy.json"
    recorded = run_against_fault_server(pytester, tmp_path, None, f"--golden-file={path}", "--record-golden",
                                        "-k", "golden")
    recorded.assert_outcomes(skipped=1)
    recorded.stdout.fnmatch_lines([f"*recorded 8 greedy outputs in {path}*"])
    recorded_file = json.loads(path.read_text())
    assert len(recorded_file["outputs"]) == 8
    assert {"engine", "model", "recorded_at", "host", "method"} <= set(recorded_file["recorded_with"]), \
        "a golden file says what recorded it, when, where and how"

    same = run_against_fault_server(pytester, tmp_path, None, f"--golden-file={path}", "-k", "golden")
    same.assert_outcomes(passed=1)

    changed = run_against_fault_server(pytester, tmp_path, "nondeterministic", f"--golden-file={path}",
                                       "-k", "golden")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(["*8 of 8 greedy outputs differ from*"])


def test_golden_check_without_a_file_skips_and_says_how_to_record(pytester, tmp_path):
    result = run_against_fault_server(pytester, tmp_path, None, f"--golden-file={tmp_path / 'none.json'}",
                                      "-k", "golden")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no golden file*: record one from a known-good deployment with --record-golden*"])


def test_acceptance_check_fails_on_an_engine_without_speculative_counters(pytester, tmp_path):
    result = run_against_fault_server(pytester, tmp_path, None, "--profile=gb200x4", f"--engine-config={EAGLE_AGG}",
                                      "-k", "acceptance")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no speculative-decoding counters (trtllm_spec_decode_num_draft_tokens_total*"
                                 "enable_iter_perf_stats: true*"])
