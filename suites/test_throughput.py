"""Throughput floors: the profile's scenarios, measured as benchmark_serving measures them, gated on the
profile's floors and ceilings, on the frontend agreeing with the client, and on --baseline when given."""

from __future__ import annotations

import pytest

from pytest_llama4.measure import baseline, crosscheck, prometheus, validity
from pytest_llama4.measure.load import run_load
from pytest_llama4.measure.metrics import samples, summarize
from pytest_llama4.measure.results import LimitResult, ScenarioParams, ScenarioResult

pytestmark = pytest.mark.throughput


def limits_table(rows: list[LimitResult]) -> str:
    lines = [f"{'figure':<24} {'kind':<8} {'limit':>12} {'measured':>12}  verdict"]
    for row in rows:
        measured = "missing" if row.measured is None else f"{row.measured:.2f}"
        lines.append(f"{row.metric:<24} {row.kind:<8} {row.limit:>12.2f} {measured:>12}  "
                     f"{'ok' if row.ok else 'MISSED'}")
    return "\n".join(lines)


@pytest.fixture(scope="session")
def baseline_figures(llama4_settings) -> dict[str, dict[str, float]] | None:
    """--baseline's figures per scenario, read before anything is started (first in the test's arguments, so set
    up before `deployment`): a file that is no perf.json fails every scenario at once with the reason."""
    if llama4_settings.baseline is None:
        return None
    try:
        return baseline.load(llama4_settings.baseline)
    except pytest.UsageError as error:
        reason = str(error)
    pytest.fail(reason, pytrace=False)  # outside the except: no "during handling of the above exception"


def test_scenario_meets_the_profile(baseline_figures, profile_scenario, profile, deployment, tokenizer_dir,
                                    llama4_settings, perf_log, record_testsuite_property, load_progress):
    scenario = profile_scenario.scenario
    before = prometheus.scrape(deployment.base_url, model=deployment.served_model)
    result = run_load(deployment.base_url, deployment.served_model, scenario, tokenizer_path=tokenizer_dir,
                      progress=load_progress)
    after = prometheus.scrape(deployment.base_url, model=deployment.served_model)
    figures = summarize(result, profile.goodput or None)
    limits = [LimitResult(**limit.evaluate(figures)) for limit in profile_scenario.limits]
    invalid = validity.problems(result, llama4_settings.max_error_rate)
    failures = [f"{scenario.name}: not a valid measurement:\n" + "\n".join(invalid)] if invalid else []
    if not all(row.ok for row in limits):
        failures.append(f"{scenario.name}: floors or ceilings missed\n{limits_table(limits)}")

    warnings, check = [], None
    if before is None or after is None:
        warnings.append("no Prometheus /metrics on the frontend: client figures not cross-checked")
    elif not crosscheck.published(after):
        known = ", ".join(count for _, count in crosscheck.TTFT_SERIES)
        warnings.append(f"the server's /metrics has no TTFT histogram ({known}): client figures not cross-checked")
    else:
        check = crosscheck.compare(
            before, after, client_requests=len(result.records) + scenario.warmup,
            client_ttft_ms_mean=figures["ttft_ms_mean"],
            tolerance_ms=profile.cross_check.get("ttft_mean_tolerance_ms", crosscheck.DEFAULT_TOLERANCE_MS),
            tolerance_pct=profile.cross_check.get("ttft_mean_tolerance_pct", crosscheck.DEFAULT_TOLERANCE_PCT))
        warnings += check.problems
        if check.problems:
            failures.append(f"{scenario.name}: client and frontend disagree:\n  " + "\n  ".join(check.problems))

    if baseline_figures is not None:
        earlier = baseline_figures.get(scenario.name)
        if earlier is None:
            warnings.append(f"scenario {scenario.name} is not in the baseline {llama4_settings.baseline}")
        else:
            regressed, table = baseline.compare(figures, earlier, llama4_settings.max_regression)
            if regressed:
                failures.append(f"regression against {llama4_settings.baseline} in {', '.join(regressed)}:\n{table}")

    perf_log(ScenarioResult(name=scenario.name, scenario=ScenarioParams.of(scenario), figures=figures,
                            limits=tuple(limits), samples=samples(result), warnings=tuple(warnings),
                            cross_check=check, valid=not invalid))
    for name, value in figures.items():
        record_testsuite_property(f"{scenario.name}.{name}", f"{value:.6g}")
    assert not failures, "\n\n".join(failures)
