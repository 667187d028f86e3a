"""Compare this run's figures with an earlier run's perf.json: how CI gates a new image on the last good one."""

from __future__ import annotations

from pathlib import Path

import pytest

from .results import PerfDocument, PerfFileError

# Gated: throughput and the median end-to-end latency. TTFT, TPOT and ITL (sensitive to queueing and to how
# chunks coalesce) and every tail are in the table, but swung by 10-60% between identical mocker runs here.
GATED = ("output_throughput", "request_throughput", "e2el_ms_median")


def higher_is_better(metric: str) -> bool:
    return metric.endswith("throughput") or metric in ("goodput", "completed")


def load(path: Path) -> dict[str, dict[str, float]]:
    """Scenario name -> figures, from a perf.json (of any release: results.py reads the older ones too)."""
    try:
        return {s.name: s.figures for s in PerfDocument.read(path).scenarios}
    except PerfFileError as error:
        raise pytest.UsageError(f"--baseline={path}: not a readable perf.json ({error}); pass "
                                "reports/<run-id>/perf.json of an earlier run") from None


def regression_pct(metric: str, current: float, baseline: float) -> float:
    """How much worse `current` is than `baseline`, in percent (negative: better)."""
    if baseline == 0:
        return 0.0
    change = (current - baseline) / abs(baseline) * 100
    return -change if higher_is_better(metric) else change


def compare(current: dict[str, float], baseline: dict[str, float], max_regression: float,
            gated: tuple[str, ...] = GATED) -> tuple[list[str], str]:
    """(regressed gated metrics, a table of every shared figure: baseline, now, change, verdict)."""
    rows, regressed = [], []
    for metric in sorted(set(current) & set(baseline)):
        worse = regression_pct(metric, current[metric], baseline[metric])
        verdict = ""
        if metric in gated and worse > max_regression:
            regressed.append(metric)
            verdict = f"REGRESSION > {max_regression:g}%"
        rows.append(f"{metric:<24} {baseline[metric]:>12.2f} {current[metric]:>12.2f} {worse:>+8.1f}%  {verdict}")
    header = f"{'figure':<24} {'baseline':>12} {'now':>12} {'worse by':>9}"
    return regressed, "\n".join([header, *rows])
