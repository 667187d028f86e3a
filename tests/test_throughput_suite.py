"""The throughput suite on the real embedded default: passes at the profile's speed, fails when slower,
and --baseline gates regressions."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from .fault_server import MODEL, serve
from .test_integration import SUITES, assert_nothing_left, check_junit, properties, run_ids, run_pytest

pytestmark = pytest.mark.integration


def run_throughput(pytester, reports: Path, *args: str):
    return run_pytest(pytester, reports, str(SUITES / "test_throughput.py"), "-m", "throughput", *args)


def perf_of(reports: Path) -> dict:
    (run_id,) = run_ids(reports)
    return json.loads((reports / run_id / "perf.json").read_text())


@pytest.mark.alone
@pytest.mark.parametrize("topology", ["agg", "disagg"])
def test_cpu_mocker_floors_hold_on_the_embedded_default(pytester, tmp_path, topology):
    reports = tmp_path / "reports"
    result = run_throughput(pytester, reports, f"--topology={topology}")
    assert result.ret == 0, result.stdout.str()[-4000:]
    result.assert_outcomes(passed=2)
    perf = perf_of(reports)
    assert perf["profile"] == "cpu-mocker" and [s["name"] for s in perf["scenarios"]] == [
        "chat-isl256-osl64-c8", "completions-isl512-osl32-rate20"]
    for scenario in perf["scenarios"]:
        assert scenario["figures"]["completed"] == scenario["scenario"]["num_prompts"]
        assert scenario["figures"]["failed"] == 0 and all(row["ok"] for row in scenario["limits"])
        assert scenario["warnings"] == [], "client and frontend should agree"
        assert len(scenario["samples"]["ttft_ms"]) == scenario["scenario"]["num_prompts"]
    (run_id,) = run_ids(reports)
    props = properties(check_junit(reports / run_id / "junit.xml"))
    assert float(props["chat-isl256-osl64-c8.output_throughput"]) > 0
    assert (reports / run_id / "summary.html").stat().st_size > 10_000
    assert_nothing_left(reports)


@pytest.mark.alone
def test_a_three_times_slower_mocker_misses_the_floors_with_a_table(pytester, tmp_path):
    result = run_throughput(pytester, tmp_path / "reports", "--speedup-ratio=1.667")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "floors or ceilings missed" in out
    assert "figure                   kind            limit     measured  verdict" in out
    assert "MISSED" in out


@pytest.mark.alone
def test_baseline_passes_an_unchanged_rerun_and_catches_a_regression(pytester, tmp_path):
    first = tmp_path / "first"
    assert run_throughput(pytester, first).ret == 0
    (run_id,) = run_ids(first)
    baseline = first / run_id / "perf.json"
    # 25%: CI runs this beside another xdist worker; on an idle machine reruns differ by 1-3%
    rerun = run_throughput(pytester, tmp_path / "rerun", f"--baseline={baseline}", "--max-regression=25")
    assert rerun.ret == 0, rerun.stdout.str()[-4000:]

    perf = json.loads(baseline.read_text())
    for scenario in perf["scenarios"]:  # an earlier image that was twice as fast
        scenario["figures"]["output_throughput"] *= 2
    better = tmp_path / "better.json"
    better.write_text(json.dumps(perf))
    result = run_throughput(pytester, tmp_path / "regressed", f"--baseline={better}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([f"*regression against {better} in *output_throughput*", "*REGRESSION > 5%*"])


def test_a_damaged_baseline_fails_every_scenario_with_the_reason_before_anything_starts(pytester, tmp_path):
    damaged = tmp_path / "perf.json"
    damaged.write_text(json.dumps({"scenarios": [{"name": "chat-isl256-osl64-c8"}]}))
    reports = tmp_path / "reports"
    result = run_throughput(pytester, reports, f"--baseline={damaged}")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert out.count(f"\n--baseline={damaged}: not a readable perf.json (scenarios[0]: no 'figures'); pass "
                     "reports/<run-id>/perf.json of an earlier run\n") == 2, out
    assert "Traceback" not in out and "raise " not in out and "During handling" not in out
    (run_id,) = run_ids(reports)
    assert not (reports / run_id / "services.json").exists(), "nothing is launched for a run that cannot be gated"


# A profile any target meets on speed, so that only validity and the client/server cross-check (at the cluster
# profiles' bound) can fail it.
LENIENT_PROFILE = """
name: lenient
engines: [trtllm-serve]
cross_check: {ttft_mean_tolerance_ms: 250, ttft_mean_tolerance_pct: 50}
scenarios:
  - {name: chat-c2, endpoint: chat, input_tokens: 16, output_tokens: 8, concurrency: 2, num_prompts: 6,
     limits: {e2el_ms_median: {ceiling: 60000}}}
  - {name: completions-c2, endpoint: completions, input_tokens: 16, output_tokens: 8, concurrency: 2,
     num_prompts: 6, limits: {e2el_ms_median: {ceiling: 60000}}}
"""


@pytest.mark.parametrize(("fault", "failing", "reason"), [
    (None, [], ""),
    ("zero-tokens", ["chat-c2", "completions-c2"], "not a valid measurement:*6 requests completed with 0 output "
                                                   "tokens in all"),
    ("completion-stream-no-finish", ["completions-c2"],
     "not a valid measurement:*6 of 6 requests failed or ended incomplete (100.0%, --max-error-rate allows 0%)"),
    ("ttft-metrics-lie", ["chat-c2", "completions-c2"], "client and frontend disagree:*mean TTFT: client * ms, "
                                                        "frontend * ms (apart by * ms, beyond 250 ms and 50%)"),
], ids=["healthy", "zero-tokens", "completion-stream-no-finish", "ttft-metrics-lie"])
def test_invalid_runs_and_lying_server_metrics_fail(pytester, tmp_path, fault, failing, reason):
    """The healthy fault server passes with the cross-check done (its /metrics times each answer); each broken one
    fails the scenarios it breaks, for its reason."""
    profile = tmp_path / "lenient.yaml"
    profile.write_text(LENIENT_PROFILE)
    server = serve(fault)
    try:
        result = run_throughput(pytester, tmp_path / "reports", f"--endpoint={server.url}", "--engine=trtllm-serve",
                                f"--served-model-name={MODEL}", f"--profile-file={profile}", "--startup-timeout=15")
    finally:
        server.shutdown()
        server.server_close()
    result.assert_outcomes(failed=len(failing), passed=2 - len(failing))
    output = result.stdout.str()
    checked = [scenario["cross_check"] for scenario in perf_of(tmp_path / "reports")["scenarios"]]
    assert len(checked) == 2 and all(checked), f"the server's own TTFT histogram was not cross-checked: {checked}"
    for name in failing:
        assert fnmatch.fnmatch(output.replace("\n", " "), f"*{name}: {reason}*"), output[-3000:]
    if fault == "completion-stream-no-finish":
        result.stdout.fnmatch_lines(["*6 x stream ended without a finish_reason*"])
