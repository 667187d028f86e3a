"""Throughput floors: the profile's scenarios, measured as benchmark_serving measures them, gated on the
profile's floors and ceilings, on the frontend agreeing with the client, and on --baseline when given."""

from __future__ import annotations

import pytest

from pytest_llama4.measure import baseline, crosscheck, prometheus, validity
from pytest_llama4.measure.load import run_load
from pytest_llama4.measure.metrics import samples, summarize

pytestmark = pytest.mark.throughput


def limits_table(rows: list[dict]) -> str:
    lines = [f"{'figure':<24} {'kind':<8} {'limit':>12} {'measured':>12}  verdict"]
    for row in rows:
        measured = "missing" if row["measured"] is None else f"{row['measured']:.2f}"
        lines.append(f"{row['metric']:<24} {row['kind']:<8} {row['limit']:>12.2f} {measured:>12}  "
                     f"{'ok' if row['ok'] else 'MISSED'}")
    return "\n".join(lines)


def test_scenario_meets_the_profile(profile_scenario, profile, deployment, tokenizer_dir, llama4_settings,
                                    perf_log, record_testsuite_property):
    scenario = profile_scenario.scenario
    before = prometheus.scrape(deployment.base_url, model=deployment.served_model)
    result = run_load(deployment.base_url, deployment.served_model, scenario, tokenizer_path=tokenizer_dir)
    after = prometheus.scrape(deployment.base_url, model=deployment.served_model)
    figures = summarize(result, profile.goodput or None)
    limits = [limit.evaluate(figures) for limit in profile_scenario.limits]
    invalid = validity.problems(result, llama4_settings.max_error_rate)
    failures = [f"{scenario.name}: not a valid measurement:\n" + "\n".join(invalid)] if invalid else []
    if not all(row["ok"] for row in limits):
        failures.append(f"{scenario.name}: floors or ceilings missed\n{limits_table(limits)}")

    warnings, cross_check = [], None
    if before is None or after is None:
        warnings.append("no Prometheus /metrics on the frontend: client figures not cross-checked")
    else:
        check = crosscheck.compare(
            before, after, client_requests=len(result.records) + scenario.warmup,
            client_ttft_ms_mean=figures["ttft_ms_mean"],
            tolerance_ms=profile.cross_check.get("ttft_mean_tolerance_ms", crosscheck.DEFAULT_TOLERANCE_MS),
            tolerance_pct=profile.cross_check.get("ttft_mean_tolerance_pct", crosscheck.DEFAULT_TOLERANCE_PCT))
        warnings += check.problems
        cross_check = check.as_dict()
        if check.problems and profile.cross_check.get("fail", True):
            failures.append("client and frontend disagree:\n  " + "\n  ".join(check.problems))

    if llama4_settings.baseline is not None:
        earlier = baseline.load(llama4_settings.baseline).get(scenario.name)
        if earlier is None:
            warnings.append(f"scenario {scenario.name} is not in the baseline {llama4_settings.baseline}")
        else:
            regressed, table = baseline.compare(figures, earlier, llama4_settings.max_regression)
            if regressed:
                failures.append(f"regression against {llama4_settings.baseline} in {', '.join(regressed)}:\n{table}")

    perf_log({"name": scenario.name, "scenario": scenario_fields(scenario), "figures": figures,
                     "limits": limits, "samples": samples(result), "warnings": warnings,
                     "cross_check": cross_check, "valid": not invalid})
    for name, value in figures.items():
        record_testsuite_property(f"{scenario.name}.{name}", f"{value:.6g}")
    assert not failures, "\n\n".join(failures)


def scenario_fields(scenario) -> dict:
    return {"input_tokens": scenario.input_tokens, "output_tokens": scenario.output_tokens,
            "concurrency": scenario.concurrency, "request_rate": scenario.request_rate,
            "num_prompts": scenario.num_prompts, "endpoint": scenario.endpoint}
