"""`summary.html`: one self-contained page per run (test outcomes per suite, perf tables and plots).

The page has no external references (inline CSS, no scripts, plots as base64 PNG), so it can be attached to a
CI run or mailed as one file. matplotlib is imported only when a page with perf data or GPU telemetry is written;
without it the page is still written, with the tables and a note that the plots were left out.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..measure.results import AcceptanceResult, PerfDocument, ScenarioResult
from ..measure.telemetry import CSV_FILE as GPU_CSV_FILE
from ..measure.telemetry import GpuSample, node_peak_used_mib, peak_used_mib, read_csv

SUMMARY_FILE = "summary.html"

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
FAILING_OUTCOMES = frozenset({"failed", "error"})

# The order of statistic columns in the latency table; statistics not listed here follow, sorted.
_STAT_ORDER = ("mean", "median", "std", "min", "p50", "p90", "p95", "p99", "p999", "max")
_LATENCY_KEY = re.compile(r"^(?P<family>[a-z0-9]+_ms)_(?P<stat>[a-z0-9]+)$")
_CDF_POINTS = 1000  # a CDF line is drawn through at most this many quantiles
_DPI = 80
_FIGSIZE = (6.0, 3.4)  # inches: 480 x 272 px at _DPI
_GPU_LEGEND_MAX = 16  # more GPU lines than this get no legend: the peak table names them
_MATPLOTLIB_MISSING = (
    '<p class="note">Plots left out: matplotlib is not installed (<code>pip install matplotlib</code>).</p>'
)


def write_summary(
    run_dir: Path,
    *,
    title: str,
    settings: dict[str, str],
    deployment: str | None,
    outcomes: list[dict],
    perf: PerfDocument | None,
) -> Path:
    """Write `run_dir/summary.html` and return its path.

    `outcomes`: one dict per test with `nodeid`, `outcome` (passed|failed|skipped|xfailed|xpassed|error),
    `duration` (seconds) and `suite` (a marker name, or "other"). `perf`: the run's perf.json, or None
    for a run without measurements (the page then has no perf section). GPU telemetry comes from
    `run_dir/gpu.csv` when the run has one.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scenarios = list(perf.scenarios) if perf is not None else []
    plots_html = _plots_section(scenarios) if perf is not None else ""
    page = _page(
        title=title,
        settings=settings,
        deployment=deployment,
        outcomes=outcomes,
        perf=perf,
        scenarios=scenarios,
        plots_html=plots_html,
        gpu_html=_gpu_section(run_dir / GPU_CSV_FILE),
    )
    path = run_dir / SUMMARY_FILE
    tmp = path.with_name(f".{SUMMARY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page
    return path


# --- formatting helpers -------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> str:
    """A figure as a short, readable string (thousands separators, precision by magnitude)."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return _e(value)


def _cells(values: Iterable[object], tag: str = "td") -> str:
    return "".join(f"<{tag}>{v}</{tag}>" for v in values)


def _stat_sort_key(stat: str) -> tuple[int, str]:
    return (_STAT_ORDER.index(stat), "") if stat in _STAT_ORDER else (len(_STAT_ORDER), stat)


def _kv_table(css_class: str, heading: str, rows: str) -> str:
    return (
        f'<table class="{css_class}"><thead><tr><th colspan="2">{_e(heading)}</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _suite_sort_key(suite: str) -> tuple[int, str]:
    return (1 if suite == "other" else 0, suite)


# --- page ---------------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1160px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color: #59636e; margin: 0 0 10px; }
.banner { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 10px 0; }
.banner.pass { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.banner.fail { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.n, th.n { text-align: right; }
tr.fail td { background: #ffebe9; }
tr.fail td.status { color: #a40e26; font-weight: 700; }
tr.ok td.status { color: #116329; font-weight: 600; }
td.bad { color: #a40e26; font-weight: 700; }
td.good { color: #116329; }
code, .nodeid { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px;
                word-break: break-all; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 10px; margin: 8px 0; }
ul.warnings { margin: 4px 0 10px; padding-left: 20px; }
ul.warnings li { background: #fff8c5; margin: 2px 0; padding: 1px 6px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; }
.scenario { margin-top: 18px; }
.tables { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
details summary { cursor: pointer; color: #59636e; }
"""


def _page(
    *,
    title: str,
    settings: dict[str, str],
    deployment: str | None,
    outcomes: list[dict],
    perf: PerfDocument | None,
    scenarios: list[ScenarioResult],
    plots_html: str,
    gpu_html: str,
) -> str:
    failed_tests = [o for o in outcomes if o.get("outcome") in FAILING_OUTCOMES]
    failed_limits = sum(1 for s in scenarios for lim in s.limits if not lim.ok)
    problems = []
    if failed_tests:
        problems.append(f"{len(failed_tests)} failed test{'s' if len(failed_tests) != 1 else ''}")
    if failed_limits:
        problems.append(f"{failed_limits} perf limit{'s' if failed_limits != 1 else ''} not met")
    if problems:
        banner = f'<div class="banner fail" id="verdict">FAILED: {_e(", ".join(problems))}</div>'
    elif outcomes or scenarios:
        banner = '<div class="banner pass" id="verdict">PASSED: every test passed and every perf limit was met</div>'
    else:
        banner = '<div class="banner fail" id="verdict">No tests ran</div>'

    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">deployment: {_e(deployment) if deployment else "none"} · written {_e(generated)}</p>',
        banner,
        _tests_section(outcomes, failed_tests),
    ]
    if perf is not None:
        parts.append(_perf_section(scenarios, plots_html))
    if perf is not None and perf.speculative is not None:
        parts.append(_acceptance_section(perf.speculative))
    parts.append(gpu_html)
    parts.append(_settings_section(settings))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _tests_section(outcomes: list[dict], failed_tests: list[dict]) -> str:
    by_suite: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    for o in outcomes:
        suite = str(o.get("suite") or "other")
        outcome = str(o.get("outcome", "error"))
        counts = by_suite.setdefault(suite, dict.fromkeys(OUTCOMES, 0))
        counts[outcome] = counts.get(outcome, 0) + 1
        seconds[suite] = seconds.get(suite, 0.0) + float(o.get("duration") or 0.0)
    extra = sorted({k for c in by_suite.values() for k in c} - set(OUTCOMES))  # unexpected outcome names
    columns = [*OUTCOMES, *extra]

    out = ['<section id="tests"><h2>Tests</h2>']
    if not outcomes:
        out.append("<p>No test outcomes were recorded.</p></section>")
        return "\n".join(out)
    head = _cells(["suite", *columns, "total", "time (s)"], "th")
    out.append(f'<table class="suites"><thead><tr>{head}</tr></thead><tbody>')
    totals = dict.fromkeys(columns, 0)
    for suite in sorted(by_suite, key=_suite_sort_key):
        counts = by_suite[suite]
        row_class = "fail" if any(counts.get(k, 0) for k in FAILING_OUTCOMES) else "ok"
        cells = [f"<td>{_e(suite)}</td>"]
        for k in columns:
            n = counts.get(k, 0)
            totals[k] += n
            cls = "n bad" if n and k in FAILING_OUTCOMES else ("n good" if n and k == "passed" else "n")
            cells.append(f'<td class="{cls}">{n}</td>')
        cells.append(f'<td class="n">{sum(counts.values())}</td><td class="n">{seconds[suite]:.1f}</td>')
        out.append(f'<tr class="{row_class}" data-suite="{_e(suite)}">{"".join(cells)}</tr>')
    total_cells = "".join(f'<td class="n">{totals[k]}</td>' for k in columns)
    out.append(
        f'<tr data-suite=""><th>all</th>{total_cells}<td class="n">{len(outcomes)}</td>'
        f'<td class="n">{sum(seconds.values()):.1f}</td></tr></tbody></table>'
    )
    if failed_tests:
        out.append(f"<h3>Failed tests ({len(failed_tests)})</h3>")
        out.append('<table class="failed"><thead><tr>' + _cells(["test", "outcome", "suite", "time (s)"], "th"))
        out.append("</tr></thead><tbody>")
        for o in failed_tests:
            out.append(
                f'<tr class="fail"><td class="nodeid">{_e(o.get("nodeid", "?"))}</td>'
                f'<td class="status">{_e(o.get("outcome"))}</td><td>{_e(o.get("suite") or "other")}</td>'
                f'<td class="n">{float(o.get("duration") or 0.0):.2f}</td></tr>'
            )
        out.append("</tbody></table>")
    else:
        out.append("<p>No failed tests.</p>")
    out.append("</section>")
    return "\n".join(out)


def _settings_section(settings: dict[str, str]) -> str:
    if not settings:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in settings.items())
    return (
        '<section id="settings"><h2>Settings</h2><details><summary>'
        f"{len(settings)} resolved settings</summary><table>{rows}</table></details></section>"
    )


# --- perf ---------------------------------------------------------------------------------------------------


def _acceptance_section(result: AcceptanceResult) -> str:
    steps = (f"{result.steps:g} drafting steps (the engine's count)" if result.steps is not None
             else f"{result.drafted / max(result.max_draft_len, 1):g} drafting steps (drafted / max_draft_len)")
    floor = f"; the profile's floor is {result.floor:g}" if result.floor is not None else ""
    return ('<section id="speculative"><h2>Speculative decoding</h2>'
            f"<p>speculative.acceptance_length <b>{result.acceptance_length:.3f}</b>: {result.accepted:g} of "
            f"{result.drafted:g} drafted tokens accepted over {_e(steps)}, max_draft_len {result.max_draft_len}"
            f"{_e(floor)}.</p></section>")


def _perf_section(scenarios: list[ScenarioResult], plots_html: str) -> str:
    out = ['<section id="perf"><h2>Performance</h2>']
    if not scenarios:
        out.append("<p>perf.json has no scenarios.</p></section>")
        return "\n".join(out)
    out.append(_overview_table(scenarios))
    out.append(plots_html)
    for i, s in enumerate(scenarios):
        out.append(_scenario_details(s, i))
    out.append("</section>")
    return "\n".join(out)


def _overview_table(scenarios: list[ScenarioResult]) -> str:
    head = [
        "scenario", "ISL", "OSL", "concurrency", "rate (req/s)", "output tok/s", "req/s",
        "TTFT p99 (ms)", "ITL p99 (ms)", "completed", "failed", "limits",
    ]  # fmt: skip
    rows = []
    for i, s in enumerate(scenarios):
        shape = s.scenario
        fig = s.figures
        bad = sum(1 for lim in s.limits if not lim.ok)
        failed_requests = fig.get("failed")
        if not s.limits:
            limit_cell = "<td>&ndash;</td>"
        elif bad:
            limit_cell = f'<td class="bad">{bad} of {len(s.limits)} FAIL</td>'
        else:
            limit_cell = f'<td class="good">{len(s.limits)} ok</td>'
        values = [
            *((shape.input_tokens, shape.output_tokens, shape.concurrency, shape.request_rate) if shape
              else (None,) * 4),
            fig.get("output_throughput"), fig.get("request_throughput"), fig.get("ttft_ms_p99"),
            fig.get("itl_ms_p99"), fig.get("completed"),
        ]  # fmt: skip
        num_cells = "".join(f'<td class="n">{_num(v)}</td>' for v in values)
        failed_cls = "n bad" if failed_requests else "n"
        rows.append(
            f'<tr class="{"fail" if bad or failed_requests else "ok"}">'
            f'<td><a href="#scenario-{i}">{_e(s.name)}</a></td>{num_cells}'
            f'<td class="{failed_cls}">{_num(failed_requests)}</td>{limit_cell}</tr>'
        )
    return (
        f'<table class="overview"><thead><tr>{_cells(head, "th")}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _scenario_details(s: ScenarioResult, index: int) -> str:
    out = [f'<div class="scenario" id="scenario-{index}"><h3>{_e(s.name)}</h3>']
    if s.warnings:
        out.append('<ul class="warnings">' + "".join(f"<li>⚠ {_e(w)}</li>" for w in s.warnings) + "</ul>")
    out.append('<div class="tables">')

    if s.scenario is not None:  # only a hand-made perf.json lacks the load shape
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_num(v)}</td></tr>" for k, v in asdict(s.scenario).items())
        out.append(_kv_table("params", "scenario", rows))

    # Latency figures pivoted (family x statistic); every other figure as key/value.
    families: dict[str, dict[str, Any]] = {}
    others: dict[str, Any] = {}
    for key, value in s.figures.items():
        m = _LATENCY_KEY.match(key)
        if m:
            families.setdefault(m["family"], {})[m["stat"]] = value
        else:
            others[key] = value
    if families:
        stats = sorted({st for f in families.values() for st in f}, key=_stat_sort_key)
        head = _cells(["ms", *stats], "th")
        body = "".join(
            f"<tr><th>{_e(fam.removesuffix('_ms'))}</th>"
            + "".join(f'<td class="n">{_num(families[fam].get(st))}</td>' for st in stats)
            + "</tr>"
            for fam in families
        )
        out.append(f'<table class="latency"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    if others:
        rows = "".join(f'<tr><th>{_e(k)}</th><td class="n">{_num(v)}</td></tr>' for k, v in others.items())
        out.append(_kv_table("figures", "figures", rows))
    out.append("</div>")

    if s.limits:
        head = _cells(["metric", "limit", "measured", "result"], "th")
        body = []
        for lim in s.limits:
            op = "≥" if lim.kind == "floor" else "≤" if lim.kind == "ceiling" else _e(lim.kind)
            body.append(
                f'<tr class="limit {"ok" if lim.ok else "fail"}"><td><code>{_e(lim.metric)}</code></td>'
                f'<td class="n">{op} {_num(lim.limit)}</td><td class="n">{_num(lim.measured)}</td>'
                f'<td class="status">{"ok" if lim.ok else "FAIL"}</td></tr>'
            )
        out.append(f'<table class="limits"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    out.append("</div>")
    return "\n".join(out)


# --- plots --------------------------------------------------------------------------------------------------


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _render(draw: Callable[[Any], str | None], alt: str) -> str:
    """Draw on a fresh Agg figure (no pyplot, no global backend switch); a PNG <figure> or a note."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGSIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    try:
        skipped = draw(ax)
    except Exception as exc:  # a bad sample list must not cost the run its page
        return f'<p class="note">Plot "{_e(alt)}" failed: {_e(type(exc).__name__)}: {_e(exc)}</p>'
    if skipped:
        return f'<p class="note">{_e(skipped)}</p>'
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" width="{int(_FIGSIZE[0] * _DPI)}" height="{int(_FIGSIZE[1] * _DPI)}" '
        f'src="data:image/png;base64,{data}"></figure>'
    )


def _plots_section(scenarios: list[ScenarioResult]) -> str:
    if not scenarios:
        return ""
    if not _has_matplotlib():
        return _MATPLOTLIB_MISSING

    colors = [f"C{i % 10}" for i in range(len(scenarios))]  # one colour per scenario across every plot
    labels = [s.name for s in scenarios]

    def throughput(ax: Any) -> str | None:
        series: dict[tuple, list[tuple[float, float]]] = {}
        for s in scenarios:
            shape, tput = s.scenario, s.figures.get("output_throughput")
            if shape is None or shape.concurrency is None or tput is None:
                continue
            key = (shape.input_tokens, shape.output_tokens, shape.endpoint)
            series.setdefault(key, []).append((float(shape.concurrency), float(tput)))
        if sum(len(points) for points in series.values()) < 2:
            return "Throughput vs concurrency left out: it needs at least 2 scenarios with a concurrency."
        for (isl, osl, endpoint), points in series.items():
            points.sort()
            label = f"ISL {isl} / OSL {osl} {endpoint or ''}"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        concurrencies = sorted({p[0] for points in series.values() for p in points})
        if concurrencies[-1] / max(concurrencies[0], 1e-9) >= 8:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        if len(concurrencies) <= 12:
            ax.set_xticks(concurrencies, [f"{c:g}" for c in concurrencies])
        ax.set_xlabel("concurrency")
        ax.set_ylabel("output tokens/s")
        ax.set_title("Output throughput vs concurrency")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        return None

    def cdf(sample_key: str, name: str) -> Callable[[Any], str | None]:
        def draw(ax: Any) -> str | None:
            drawn = 0
            for s, color, label in zip(scenarios, colors, labels, strict=True):
                values = sorted(s.samples.get(sample_key, []))
                if not values:
                    continue
                xs, ys = _cdf_points(values)
                ax.plot(xs, ys, color=color, label=label, linewidth=1.5)
                drawn += 1
            if not drawn:
                return f"{name} CDF left out: no scenario has {sample_key} samples."
            ax.set_xlabel(f"{name} (ms)")
            ax.set_ylabel("fraction of samples ≤ x")
            ax.set_ylim(0, 1.02)
            ax.set_xlim(left=0)
            ax.set_title(f"{name} CDF")
            ax.legend(fontsize=8, loc="lower right")
            return None

        return draw

    def over_time(ax: Any) -> str | None:
        drawn = 0
        for s, color, label in zip(scenarios, colors, labels, strict=True):
            pairs = list(zip(s.samples.get("request_start_s", []), s.samples.get("e2el_ms", []), strict=False))
            if not pairs:
                continue
            t0 = min(p[0] for p in pairs)
            ax.scatter([p[0] - t0 for p in pairs], [p[1] for p in pairs], s=6, alpha=0.6, color=color, label=label,
                       linewidths=0)  # fmt: skip
            drawn += 1
        if not drawn:
            return "Latency over time left out: no scenario has both request_start_s and e2el_ms samples."
        ax.set_xlabel("request start (s after the scenario's first request)")
        ax.set_ylabel("end-to-end latency (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title("End-to-end latency over time")
        ax.legend(fontsize=8, markerscale=2)
        return None

    figures = [
        _render(throughput, "Output throughput vs concurrency"),
        _render(cdf("ttft_ms", "TTFT"), "TTFT CDF"),
        _render(cdf("itl_ms", "ITL"), "ITL CDF"),
        _render(over_time, "End-to-end latency over time"),
    ]
    return '<div class="plots">' + "\n".join(figures) + "</div>"


def _cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The empirical CDF of sorted `values`, thinned to at most _CDF_POINTS quantiles (first and last kept)."""
    n = len(values)
    if n <= _CDF_POINTS:
        indices: Iterable[int] = range(n)
    else:
        indices = sorted({round(i * (n - 1) / (_CDF_POINTS - 1)) for i in range(_CDF_POINTS)})
    xs, ys = [], []
    for i in indices:
        xs.append(values[i])
        ys.append((i + 1) / n)
    return xs, ys


# --- GPU telemetry ------------------------------------------------------------------------------------------


def _gpu_section(csv_path: Path) -> str:
    """Memory used over time per node/GPU and the peaks, from gpu.csv (pytest_llama4.measure.telemetry)."""
    out = ['<section id="gpu"><h2>GPU</h2>']
    if not csv_path.is_file():
        out.append("<p>no GPU telemetry in this run</p></section>")
        return "\n".join(out)
    try:
        samples = read_csv(csv_path)
    except (ValueError, KeyError, TypeError) as exc:  # a damaged file must not cost the run its page
        out.append(f'<p class="note">{_e(GPU_CSV_FILE)} is unreadable: {_e(type(exc).__name__)}: {_e(exc)}</p>')
        return "\n".join([*out, "</section>"])
    if not samples:
        out.append(f"<p>{_e(GPU_CSV_FILE)} has no samples.</p></section>")
        return "\n".join(out)
    out.append(_render(_gpu_memory_plot(samples), "GPU memory used over time") if _has_matplotlib()
               else _MATPLOTLIB_MISSING)  # fmt: skip
    out.append(_gpu_peak_table(samples))
    out.append("</section>")
    return "\n".join(out)


def _gpu_series(samples: list[GpuSample]) -> dict[tuple[str, int], list[GpuSample]]:
    series: dict[tuple[str, int], list[GpuSample]] = {}
    for s in sorted(samples, key=lambda s: s.time):
        series.setdefault((s.node, s.gpu), []).append(s)
    return dict(sorted(series.items()))


def _gpu_memory_plot(samples: list[GpuSample]) -> Callable[[Any], str | None]:
    def draw(ax: Any) -> str | None:
        t0 = min(s.time for s in samples)
        series = _gpu_series(samples)
        for (node, gpu), points in series.items():
            xs, ys = _with_gaps([(s.time - t0, s.memory_used_mib) for s in points])
            ax.plot(xs, [y / 1024 for y in ys], linewidth=1.2, label=f"{node} GPU {gpu}")
        totals = [s.memory_total_mib for s in samples if s.memory_total_mib is not None]
        if totals:
            ax.axhline(max(totals) / 1024, color="0.4", linestyle="--", linewidth=1, label="memory total")
        ax.set_xlabel("time (s after the run's first sample)")
        ax.set_ylabel("memory used (GiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("GPU memory used over time")
        if len(series) <= _GPU_LEGEND_MAX:
            ax.legend(fontsize=8)  # loc="best": memory lines sit anywhere between 0 and the total
        return None

    return draw


def _with_gaps(points: list[tuple[float, float | None]]) -> tuple[list[float], list[float]]:
    """Points as x and y lists, broken (NaN) where sampling paused, e.g. between tests: no line across a gap."""
    steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    gap = 5 * steps[len(steps) // 2] if steps else math.inf
    xs, ys = [points[0][0]], [_nan_for_none(points[0][1])]
    for (x0, _), (x, y) in itertools.pairwise(points):
        if x - x0 > gap:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(x)
        ys.append(_nan_for_none(y))
    return xs, ys


def _nan_for_none(value: float | None) -> float:
    return math.nan if value is None else value


def _gpu_peak_table(samples: list[GpuSample]) -> str:
    head = _cells(["node", "GPU", "name", "samples", "peak used (GiB)", "total (GiB)", "peak used %",
                   "peak utilisation %"], "th")  # fmt: skip
    peaks = peak_used_mib(samples)
    rows = []
    for (node, gpu), points in _gpu_series(samples).items():
        total = max((s.memory_total_mib for s in points if s.memory_total_mib is not None), default=None)
        peak = peaks.get((node, gpu))
        utilization = max((s.utilization_pct for s in points if s.utilization_pct is not None), default=None)
        values = [len(points), _gib(peak), _gib(total),
                  peak / total * 100 if peak is not None and total else None, utilization]  # fmt: skip
        rows.append(f"<tr><td>{_e(node)}</td><td>{gpu}</td><td>{_e(points[0].name)}</td>"
                    + "".join(f'<td class="n">{_num(v)}</td>' for v in values) + "</tr>")  # fmt: skip
    for node, peak in sorted(node_peak_used_mib(samples).items()):
        rows.append(f'<tr class="node"><th>{_e(node)}</th><td colspan="3">all GPUs at once</td>'
                    f'<td class="n">{_num(_gib(peak))}</td><td colspan="3"></td></tr>')  # fmt: skip
    return f'<table class="gpu-peaks"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _gib(mib: float | None) -> float | None:
    return None if mib is None else round(mib / 1024, 2)
