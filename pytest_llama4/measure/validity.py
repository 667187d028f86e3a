"""The validity gate of a measuring run: figures from a run that generated nothing, or lost more requests than
allowed, are not measurements. Such a run fails with the counts; it is never reported as a fast pass."""

from __future__ import annotations

import re
from collections import Counter

from .load import LoadResult

_DETAIL = re.compile(r"\d+(\.\d+)?|'[^']*'|\"[^\"]*\"")


def problems(result: LoadResult, max_error_rate_pct: float) -> list[str]:
    """Why the run's figures are not valid measurements; empty when they are."""
    records = result.records
    done = [r for r in records if r.ok]
    found = []
    if not records:
        return [f"scenario {result.scenario.name}: no request was measured"]
    if not done:
        found.append(f"none of the {len(records)} requests completed")
    elif sum(r.output_tokens or 0 for r in done) == 0:
        found.append(f"{len(done)} requests completed with 0 output tokens in all: nothing was generated")
    failed = [r for r in records if not r.ok]
    rate = 100.0 * len(failed) / len(records)
    if rate > max_error_rate_pct:
        found.append(f"{len(failed)} of {len(records)} requests failed or ended incomplete ({rate:.1f}%, "
                     f"--max-error-rate allows {max_error_rate_pct:g}%):\n" + _reasons(failed))
    return found


def _reasons(failed: list) -> str:
    """Failures counted by kind (numbers and quoted details folded together), most frequent first."""
    kinds = Counter(_DETAIL.sub("…", (r.error or "unknown")[:120]) for r in failed)
    return "\n".join(f"  {count:>5} x {kind}" for kind, count in kinds.most_common(8))
