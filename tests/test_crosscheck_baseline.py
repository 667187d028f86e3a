import json

import pytest

from pytest_llama4.measure import baseline, crosscheck, profiles

SUM, COUNT = crosscheck.TTFT_SERIES[0]
BEFORE = {COUNT: 10, SUM: 1.0}


@pytest.mark.parametrize("series", crosscheck.TTFT_SERIES, ids=["dynamo-frontend", "vllm"])
def test_agreeing_server_and_client(series):
    ttft_sum, ttft_count = series
    before, after = {ttft_count: 10, ttft_sum: 1.0}, {ttft_count: 20, ttft_sum: 1.5}  # 10 requests, 50 ms mean
    check = crosscheck.compare(before, after, client_requests=10, client_ttft_ms_mean=58.0)
    assert check.server_ttft_ms_mean == pytest.approx(50.0) and check.problems == ()


def test_count_mismatch_and_ttft_disagreement_are_reported():
    after = {COUNT: 18, SUM: 1.4}  # 8 seen, 50 ms mean
    check = crosscheck.compare(BEFORE, after, client_requests=10, client_ttft_ms_mean=400.0)
    assert check.problems[0] == "the frontend counted 8 first tokens, the client 10 requests"
    assert check.problems[1].startswith("mean TTFT: client 400.0 ms, frontend 50.0 ms")


def test_only_a_published_ttft_histogram_is_cross_checked():
    assert crosscheck.published({COUNT: 0.0}) and crosscheck.published({"vllm:time_to_first_token_seconds_count": 1})
    assert not crosscheck.published({"dynamo_frontend_requests_total": 3.0})


@pytest.mark.parametrize("name", profiles.available())
def test_every_shipped_profile_states_the_cross_check_bound(name):
    """A profile can no longer warn only: each states the bound beyond which client and server disagree."""
    bound = profiles.load(profiles.PROFILES_DIR / f"{name}.yaml").cross_check
    assert set(bound) == profiles.CROSS_CHECK_KEYS, f"{name}: cross_check {bound}"


def test_a_warn_only_cross_check_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("name: old\ncross_check: {ttft_mean_tolerance_ms: 250, fail: false}\nscenarios: []\n")
    with pytest.raises(pytest.UsageError, match=r"cross_check\.fail is no longer read: a client/server disagreement "
                                               r"beyond the stated bound always fails the run; state the bound"):
        profiles.load(path)


def test_baseline_flags_only_gated_regressions_beyond_the_bound():
    base = {"output_throughput": 1000.0, "ttft_ms_median": 100.0, "ttft_ms_p99": 200.0, "failed": 0.0}
    same = baseline.compare(base, base, 5)[0]
    assert same == []
    worse = {"output_throughput": 900.0, "ttft_ms_median": 104.0, "ttft_ms_p99": 400.0, "failed": 0.0}
    regressed, table = baseline.compare(worse, base, 5)
    assert regressed == ["output_throughput"]  # -10%; TTFT is reported, not gated
    assert "output_throughput" in table and "+10.0%" in table and "REGRESSION > 5%" in table
    assert "ttft_ms_p99" in table and "+100.0%" in table


def test_baseline_file_errors_are_usage_errors(tmp_path):
    bad = tmp_path / "perf.json"
    bad.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(pytest.UsageError, match=r"not a readable perf\.json"):
        baseline.load(bad)
    bad.write_text(json.dumps({"scenarios": [{"name": "a", "figures": {"x": 1.0}}]}))
    assert baseline.load(bad) == {"a": {"x": 1.0}}
