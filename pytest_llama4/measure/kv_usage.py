"""KV-cache usage of a deployment's workers, read where Dynamo 1.4.2 exposes it.

What was found (ai-dynamo 1.4.2, mocker engine, verified by scraping under load):
  - a worker's own metrics (`DYN_SYSTEM_PORT`, `/metrics`): the mocker publishes vLLM-style engine gauges once it
    served a request: `vllm:kv_cache_usage_perc` (and its alias `vllm:gpu_cache_usage_perc`), a fraction 0..1 of
    its cache blocks in use. Aggregated and decode mockers do; a **prefill** mocker publishes no engine gauges.
    Workers built on Dynamo's backend publisher (dynamo.trtllm and the other real engines) publish
    `dynamo_component_gpu_cache_usage_percent` (0..1) and `dynamo_component_total_blocks` instead
    (dynamo/common/utils/prometheus.py); the mocker does not.
  - the frontend (`/metrics`): `dynamo_frontend_model_total_kv_blocks{model=...}`, the total blocks of a worker
    serving the model (the mocker's `num_gpu_blocks`); no per-worker usage with the default round-robin router.
  - `DYN_MOCKER_KV_CACHE_TRACE=1` in a mocker's environment makes it log one "KV cache trace" line per block
    allocation and release, with `active_blocks`, `total_blocks` and `utilization`, prefill mockers included.
    The embedded default does not set it; when a worker's log has such lines they are read as well.

Where a worker's metrics listen comes from the run's service directory (services.py: reports/<run>/services.json),
which every process of the run can read, xdist workers included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import requests

from ..deploy.engines.dynamo_mocker import read_engine_args
from . import prometheus
from .oom import plain

USAGE_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "dynamo_component_gpu_cache_usage_percent")
TOTAL_BLOCKS_GAUGE = "dynamo_component_total_blocks"
FRONTEND_TOTAL_BLOCKS = "dynamo_frontend_model_total_kv_blocks"
TRACE_ENV = "DYN_MOCKER_KV_CACHE_TRACE"

_TRACE = re.compile(r"KV cache trace .*?\bactive_blocks=(\d+).*?\btotal_blocks=(\d+) utilization=([0-9.eE+-]+)")


@dataclass(frozen=True)
class KvReading:
    usage: float | None  # fraction of blocks in use, None when the worker exposes no usage gauge
    total_blocks: float | None
    gauge: str | None  # which gauge the usage came from


def read_worker(metrics_url: str, timeout: float = 5.0) -> KvReading:
    """One scrape of a worker's metrics (the highest value over its label sets: one per data-parallel rank)."""
    response = requests.get(metrics_url, timeout=timeout)
    response.raise_for_status()
    per_name = _maxima(response.text)
    gauge = next((name for name in USAGE_GAUGES if name in per_name), None)
    return KvReading(per_name.get(gauge) if gauge else None, per_name.get(TOTAL_BLOCKS_GAUGE), gauge)


def _maxima(text: str) -> dict[str, float]:
    """Highest value per metric name: `prometheus.parse` sums label sets, which is wrong for a fraction."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        series, _, raw = line.rpartition(" ")
        if not series or line.startswith("#"):
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        name = series.split("{", 1)[0].strip()
        values[name] = max(values.get(name, value), value)
    return values


def frontend_total_blocks(base_url: str, model: str) -> float | None:
    figures = prometheus.scrape(base_url, model=model)
    return None if figures is None else figures.get(FRONTEND_TOTAL_BLOCKS)


def configured_blocks(engine_config: Path) -> int | None:
    """`num_gpu_blocks` of a mocker's resolved engine args (reports/<run>/engine_configs/<service>.json)."""
    try:
        value = read_engine_args(engine_config).get("num_gpu_blocks")
    except (OSError, ValueError):
        return None
    return int(value) if value is not None else None


@dataclass(frozen=True)
class TraceLine:
    active_blocks: int
    total_blocks: int
    utilization: float


def trace_lines(log_path: Path, offset: int = 0) -> list[TraceLine]:
    """The mocker's KV cache trace lines in a log from byte `offset` on (none unless DYN_MOCKER_KV_CACHE_TRACE)."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    found = (_TRACE.search(plain(line)) for line in text.splitlines() if "KV cache trace" in line)
    return [TraceLine(int(m.group(1)), int(m.group(2)), float(m.group(3))) for m in found if m]


# ---------------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class WorkerKv:
    """One worker's KV figures over a load: usage values (gauge samples and trace lines) and block totals."""

    worker: str
    source: str  # the gauge, "trace", both, or "none"
    values: tuple[float, ...]
    totals: tuple[int, ...]  # total blocks as the worker reported them
    configured: int | None  # num_gpu_blocks of its engine config

    @property
    def peak(self) -> float | None:
        return max(self.values, default=None)


def summarize(worker: str, readings: list[KvReading], trace: list[TraceLine], configured: int | None) -> WorkerKv:
    values = [r.usage for r in readings if r.usage is not None] + [t.utilization for t in trace]
    totals = {t.total_blocks for t in trace} | {int(r.total_blocks) for r in readings if r.total_blocks is not None}
    gauge = next((r.gauge for r in readings if r.gauge), None)
    source = " + ".join(filter(None, [gauge, "trace" if trace else None])) or "none"
    return WorkerKv(worker, source, tuple(values), tuple(sorted(totals)), configured)


def problems(rows: list[WorkerKv], frontend_total: float | None) -> list[str]:
    """Usage outside [0, 1] or never above 0 under load, totals that differ from the configured blocks."""
    found = []
    for row in rows:
        if row.values and not all(0 <= v <= 1 for v in row.values):
            found.append(f"{row.worker}: KV usage outside [0, 1]: {min(row.values)} .. {max(row.values)}")
        if row.values and not max(row.values) > 0:
            found.append(f"{row.worker}: KV usage never rose above 0 under load: the figure does not move")
        if row.configured and any(total != row.configured for total in row.totals):
            found.append(f"{row.worker}: total blocks {list(row.totals)} != configured num_gpu_blocks "
                         f"{row.configured}")
    configured = {row.configured for row in rows if row.configured}
    if configured and frontend_total not in configured:
        found.append(f"the frontend's {FRONTEND_TOTAL_BLOCKS} is {frontend_total}, the workers are configured with "
                     f"{sorted(configured)}")
    if not any(row.values for row in rows):
        found.append(f"no worker exposes a KV usage figure ({', '.join(USAGE_GAUGES)}, or {TRACE_ENV}=1 lines)")
    return found


def table(rows: list[WorkerKv]) -> str:
    lines = [f"{'worker':<12} {'source':<42} {'samples':>7} {'min':>8} {'peak':>8}  total blocks / configured"]
    for row in rows:
        low, peak = ("-" if v is None else f"{v:.4f}" for v in (min(row.values, default=None), row.peak))
        lines.append(f"{row.worker:<12} {row.source:<42} {len(row.values):>7} {low:>8} {peak:>8}  "
                     f"{list(row.totals) or '-'} / {row.configured or '-'}")
    return "\n".join(lines)
