"""summary.html: self-contained, complete, escaped; and rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import csv
import html
import io
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_llama4.measure.results import LimitResult, PerfDocument, ScenarioParams, ScenarioResult
from pytest_llama4.measure.telemetry import CSV_COLUMNS
from pytest_llama4.report.summary import write_summary

from .conftest import require

PNG_PREFIX = "data:image/png;base64,"
FAILED_NODEID = "suites/test_streaming.py::test_final_chunk_has_finish_reason[max_tokens=<1>]"
NASTY_WARNING = "ISL drifted: <script>alert(1)</script> & co"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _limit(metric: str, kind: str, limit: float, measured: float) -> LimitResult:
    ok = measured >= limit if kind == "floor" else measured <= limit
    return LimitResult(metric=metric, kind=kind, limit=limit, measured=measured, ok=ok)


def _scenario(
    rng: random.Random, name: str, *, concurrency: int | None, rate: float | None, ttft_p99_ceiling: float
) -> ScenarioResult:
    """One scenario as perf.json holds it, with lognormal latencies that grow with the load."""
    load = concurrency or 8
    n = 120
    ttft = [rng.lognormvariate(3.5 + 0.15 * load**0.5, 0.35) for _ in range(n)]
    itl = [rng.lognormvariate(2.0 + 0.05 * load**0.5, 0.25) for _ in range(n * 40)]
    osl = 256
    e2el = [t + sum(rng.sample(itl, 20)) / 20 * (osl - 1) for t in ttft]
    starts, t = [], 0.0
    for _ in range(n):
        starts.append(round(t, 3))
        t += rng.expovariate(rate if rate else load / 3.0)
    duration = max(s + e / 1000 for s, e in zip(starts, e2el, strict=True))
    figures: dict[str, float] = {
        "output_throughput": n * osl / duration,
        "request_throughput": n / duration,
        "total_token_throughput": n * (osl + 1024) / duration,
        "completed": n,
        "failed": 0,
        "goodput": n / duration * 0.9,
    }
    for family, values in (("ttft_ms", ttft), ("itl_ms", itl), ("tpot_ms", itl[:n]), ("e2el_ms", e2el)):
        figures[f"{family}_mean"] = sum(values) / len(values)
        figures[f"{family}_median"] = _percentile(values, 50)
        figures[f"{family}_p90"] = _percentile(values, 90)
        figures[f"{family}_p99"] = _percentile(values, 99)
    ttft_p99 = figures["ttft_ms_p99"]
    floor = 10.0
    return ScenarioResult(
        name=name,
        scenario=ScenarioParams(input_tokens=1024, output_tokens=osl, concurrency=concurrency, request_rate=rate,
                                num_prompts=n, endpoint="/v1/chat/completions"),
        figures=figures,
        limits=(
            _limit("ttft_ms_p99", "ceiling", ttft_p99_ceiling, ttft_p99),
            _limit("output_throughput", "floor", floor, figures["output_throughput"]),
        ),
        samples={"ttft_ms": ttft, "itl_ms": itl, "e2el_ms": e2el, "request_start_s": starts},
        warnings=(NASTY_WARNING,) if concurrency == 16 else (),
    )


@pytest.fixture
def perf() -> PerfDocument:
    rng = random.Random(20261124)
    return PerfDocument(
        run_id=RUN_ID,
        scenarios=(
            _scenario(rng, "isl1024-osl256-c1", concurrency=1, rate=None, ttft_p99_ceiling=10_000.0),
            _scenario(rng, "isl1024-osl256-c16", concurrency=16, rate=None, ttft_p99_ceiling=5.0),  # fails
            _scenario(rng, "isl1024-osl256-rate4", concurrency=None, rate=4.0, ttft_p99_ceiling=10_000.0),
        ),
    )


@pytest.fixture
def outcomes() -> list[dict]:
    return [
        {"nodeid": "suites/test_schema.py::test_models_lists_served_model", "outcome": "passed", "duration": 0.12,
         "suite": "schema"},
        {"nodeid": "suites/test_schema.py::test_chat_completion_shape", "outcome": "passed", "duration": 0.31,
         "suite": "schema"},
        {"nodeid": "suites/test_streaming.py::test_stream_usage", "outcome": "passed", "duration": 0.8,
         "suite": "streaming"},
        {"nodeid": FAILED_NODEID, "outcome": "failed", "duration": 1.5, "suite": "streaming"},
        {"nodeid": "suites/test_errors.py::test_empty_messages_is_400", "outcome": "passed", "duration": 0.05,
         "suite": "errors"},
        {"nodeid": "suites/test_errors.py::test_tool_call_finish_reason", "outcome": "xfailed", "duration": 0.4,
         "suite": "errors"},
        {"nodeid": "suites/test_throughput.py::test_concurrency_sweep", "outcome": "error", "duration": 0.0,
         "suite": "throughput"},
        {"nodeid": "suites/test_memory.py::test_kv_cache", "outcome": "skipped", "duration": 0.0, "suite": "other"},
    ]  # fmt: skip


SETTINGS = {"topology": "agg", "launcher": "local", "endpoint": "http://127.0.0.1:8000", "model": "<mocker & co>"}


def _write(tmp_path: Path, outcomes: list[dict], perf: PerfDocument | None) -> tuple[Path, str]:
    path = write_summary(
        tmp_path / RUN_ID,
        title="pytest-llama4 run 20261124-210000-abcd",
        settings=SETTINGS,
        deployment="agg: frontend + 1 mocker at http://127.0.0.1:8000",
        outcomes=outcomes,
        perf=perf,
    )
    return path, path.read_text(encoding="utf-8")


def _rows(page: str, table_class: str) -> list[str]:
    m = re.search(rf'<table class="{table_class}">(.*?)</table>', page, re.S)
    assert m, f"no <table class={table_class!r}>"
    return re.findall(r"<tr[^>]*>.*?</tr>", m.group(1), re.S)


def _cell_texts(row: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(re.escape(PNG_PREFIX) + r"([A-Za-z0-9+/=]+)", page)]


def _external_refs(page: str) -> list[str]:
    refs = re.findall(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", page, re.I)
    refs += re.findall(r"""url\(\s*["']?\s*((?:https?:)?//[^)"']*)""", page, re.I)
    refs += re.findall(r"@import", page)
    return refs


def test_page_is_written_self_contained_and_complete(tmp_path: Path, outcomes: list[dict], perf: PerfDocument) -> None:
    path, page = _write(tmp_path, outcomes, perf)
    assert path == tmp_path / "20261124-210000-abcd" / "summary.html"
    assert page.startswith("<!DOCTYPE html>")
    assert _external_refs(page) == []
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for s in perf.scenarios:
        assert s.name in page
    assert html.escape(FAILED_NODEID) in page
    # Text is escaped everywhere: the warning's markup, the settings, the nodeid's brackets.
    assert "<script>alert(1)</script>" not in page
    assert html.escape(NASTY_WARNING) in page
    assert html.escape(SETTINGS["model"]) in page
    # Four plots (throughput vs concurrency has 2 points: c1 and c16), each a real PNG.
    import matplotlib.image as mpimg  # a test requirement (dev extra), like chromium for the browser test
    pngs = _pngs(page)
    assert len(pngs) == 4
    for png in pngs:
        image = mpimg.imread(io.BytesIO(png), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 200
        assert image.std() > 0.05  # not a blank canvas
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert alts == ["Output throughput vs concurrency", "TTFT CDF", "ITL CDF", "End-to-end latency over time"]
    assert len(page) < 400_000  # dpi 80 keeps the page light


def test_suite_counts_and_failed_tests(tmp_path: Path, outcomes: list[dict]) -> None:
    _, page = _write(tmp_path, outcomes, None)
    header = _cell_texts(_rows(page, "suites")[0])
    assert header == ["suite", "passed", "failed", "error", "skipped", "xfailed", "xpassed", "total", "time (s)"]
    rows = {cells[0]: cells for cells in map(_cell_texts, _rows(page, "suites")[1:])}
    assert list(rows) == ["errors", "schema", "streaming", "throughput", "other", "all"]  # "other" last
    assert rows["streaming"][1:8] == ["1", "1", "0", "0", "0", "0", "2"]
    assert rows["throughput"][1:8] == ["0", "0", "1", "0", "0", "0", "1"]
    assert rows["errors"][1:8] == ["1", "0", "0", "0", "1", "0", "2"]
    assert rows["all"][1:8] == ["4", "1", "1", "1", "1", "0", "8"]
    failed = [_cell_texts(r) for r in _rows(page, "failed")[1:]]
    assert [f[0] for f in failed] == [FAILED_NODEID, "suites/test_throughput.py::test_concurrency_sweep"]
    assert 'id="verdict">FAILED: 2 failed tests' in page


def test_failing_limit_is_marked(tmp_path: Path, outcomes: list[dict], perf: PerfDocument) -> None:
    _, page = _write(tmp_path, outcomes, perf)
    tables = re.findall(r'<table class="limits">.*?</table>', page, re.S)
    assert len(tables) == 3
    c16 = tables[1]
    failing = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", c16, re.S) if "ttft_ms_p99" in r]
    assert len(failing) == 1
    assert 'class="limit fail"' in failing[0]
    assert _cell_texts(failing[0])[0] == "ttft_ms_p99"
    assert _cell_texts(failing[0])[1] == "≤ 5"
    assert _cell_texts(failing[0])[3] == "FAIL"
    passing = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", tables[0], re.S) if "<tr class=\"limit" in r]
    assert passing and all('class="limit ok"' in r and "FAIL" not in r for r in passing)
    # The overview flags the scenario, and the verdict counts the limit.
    overview = {c[0]: c for c in map(_cell_texts, _rows(page, "overview")[1:])}
    assert overview["isl1024-osl256-c16"][-1] == "1 of 2 FAIL"
    assert overview["isl1024-osl256-c1"][-1] == "2 ok"
    assert "1 perf limit not met" in page
    # Every figure is on the page (latency figures pivoted by statistic).
    latency = _cell_texts(re.findall(r'<table class="latency">.*?</table>', page, re.S)[1])
    assert latency[:5] == ["ms", "mean", "median", "p90", "p99"]
    assert {"ttft", "itl", "tpot", "e2el"} <= set(latency)
    for key in ("output_throughput", "request_throughput", "total_token_throughput", "completed", "failed", "goodput"):
        assert f"<th>{key}</th>" in page


def test_without_perf(tmp_path: Path, outcomes: list[dict]) -> None:
    path, page = _write(tmp_path, outcomes, None)
    assert path.is_file()
    assert 'id="perf"' not in page and PNG_PREFIX not in page
    assert html.escape(FAILED_NODEID) in page
    assert _external_refs(page) == []
    assert "<p>no GPU telemetry in this run</p>" in page


def test_all_green_and_empty(tmp_path: Path) -> None:
    _, page = _write(tmp_path / "green", [{"nodeid": "a::b", "outcome": "passed", "duration": 1, "suite": "x"}], None)
    assert 'class="banner pass" id="verdict"' in page
    assert "No failed tests." in page
    _, page = _write(tmp_path / "empty", [], PerfDocument(scenarios=()))
    assert "No test outcomes were recorded." in page and "perf.json has no scenarios." in page


def test_one_concurrency_point_skips_that_plot(tmp_path: Path, outcomes: list[dict], perf: PerfDocument) -> None:
    perf = replace(perf, scenarios=(perf.scenarios[0], perf.scenarios[2]))  # c1 and a rate scenario
    _, page = _write(tmp_path, outcomes, perf)
    assert re.findall(r'<img alt="([^"]+)"', page) == ["TTFT CDF", "ITL CDF", "End-to-end latency over time"]
    assert "it needs at least 2 scenarios with a concurrency" in page


def test_without_matplotlib(tmp_path: Path, outcomes: list[dict], perf: PerfDocument,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    _, page = _write(tmp_path, outcomes, perf)
    assert PNG_PREFIX not in page
    assert "Plots left out: matplotlib is not installed" in page
    assert 'class="limit fail"' in page and "isl1024-osl256-rate4" in page
    _write_gpu_csv(tmp_path / RUN_ID)
    _, page = _write(tmp_path, outcomes, None)
    assert PNG_PREFIX not in page and "Plots left out: matplotlib is not installed" in page
    assert len(_rows(page, "gpu-peaks")) == 1 + 4 + 2


# --- GPU telemetry ------------------------------------------------------------------------------------------


def _write_gpu_csv(run_dir: Path) -> None:
    """gpu.csv as pytest_llama4.measure.telemetry writes it: 2 nodes x 2 GPUs every 0.5 s, with a pause between tests.

    node1 GPU 0 climbs to 60 GiB in the first test; node2 GPU 1 reports no memory figures ([N/A] on its node).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [CSV_COLUMNS]
    for tick in [*range(20), *range(100, 110)]:  # the second test starts 40 s after the first ended
        at = 1795560000 + tick * 0.5
        node1 = [min(tick, 12) * 5 * 1024 if tick < 100 else 2048, 1024]
        rows += [(f"{at:.3f}", "node1", str(gpu), "NVIDIA H100 80GB HBM3", str(used), "81559", "37")
                 for gpu, used in enumerate(node1)]
        rows += [(f"{at:.3f}", "node2", "0", "NVIDIA H100 80GB HBM3", "4096", "81559", ""),
                 (f"{at:.3f}", "node2", "1", "NVIDIA H100 80GB HBM3", "", "", "")]
    with (run_dir / "gpu.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)


RUN_ID = "20261124-210000-abcd"
NO_VALUE = html.unescape("&ndash;")  # how the page shows a figure that is missing


def test_gpu_section_plots_memory_and_lists_peaks(tmp_path: Path, outcomes: list[dict]) -> None:
    import matplotlib.image as mpimg  # a test requirement (dev extra)

    _write_gpu_csv(tmp_path / RUN_ID)
    _, page = _write(tmp_path, outcomes, None)
    assert "no GPU telemetry in this run" not in page
    section = re.search(r'<section id="gpu">.*?</section>', page, re.S).group(0)
    assert re.findall(r'<img alt="([^"]+)"', section) == ["GPU memory used over time"]
    (png,) = _pngs(section)
    image = mpimg.imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 100 and image.shape[1] > 200 and image.std() > 0.05
    rows = [_cell_texts(r) for r in _rows(page, "gpu-peaks")]
    assert rows[0] == ["node", "GPU", "name", "samples", "peak used (GiB)", "total (GiB)", "peak used %",
                       "peak utilisation %"]
    assert rows[1] == ["node1", "0", "NVIDIA H100 80GB HBM3", "30", "60", "79.65", "75.33", "37"]
    assert rows[4] == ["node2", "1", "NVIDIA H100 80GB HBM3", "30", *[NO_VALUE] * 4]
    # Per node: the most in use at one time over all its GPUs (node1: 60 + 1 GiB).
    assert rows[5] == ["node1", "all GPUs at once", "61", ""]
    assert rows[6] == ["node2", "all GPUs at once", "4", ""]
    assert _external_refs(page) == []


def test_gpu_csv_without_samples(tmp_path: Path) -> None:
    (tmp_path / RUN_ID).mkdir()
    (tmp_path / RUN_ID / "gpu.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    _, page = _write(tmp_path, [], None)
    assert "<p>gpu.csv has no samples.</p>" in page


# --- a real browser -----------------------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(None if exe else "chromium is not installed: apt-get install chromium (scripts/setup --tests does)",
            "the summary-page browser test")
    return exe


def _run_chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _console_messages(stderr: str) -> list[str]:
    # Chromium logs every console message of the page (console.*, uncaught exceptions) as ":CONSOLE" lines,
    # e.g. `[..:INFO:CONSOLE:1] "Uncaught Error: x", source: file:///... (1)`. The rest of stderr is noise
    # from a headless machine without D-Bus or a GPU.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


# A probe appended to a copy of the page: after load, it records in the DOM how many images decoded.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute("data-probe", `images=${imgs.length} broken=${broken}`);
});
</script>"""


def test_chromium_renders_the_page(tmp_path: Path, outcomes: list[dict], perf: PerfDocument) -> None:
    exe = _chromium()
    import matplotlib.image as mpimg  # a test requirement (dev extra), like chromium for the browser test
    path, page = _write(tmp_path, outcomes, perf)
    shot = tmp_path / "summary.png"

    started = time.monotonic()
    proc = _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", path.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _console_messages(proc.stderr) == []
    assert shot.is_file() and shot.stat().st_size > 10_000

    image = mpimg.imread(shot)  # floats in [0, 1], height x width x 3 or 4
    assert image.shape[:2] == (2000, 1200)
    rgb = image[..., :3]
    assert rgb.std() > 0.05, "the screenshot is blank"
    non_white = (rgb < 0.95).any(axis=-1).mean()
    assert non_white > 0.02, f"only {non_white:.1%} of the screenshot is not white"
    # The plots drew in the browser: matplotlib's first two scenario colours (C0 blue, C1 orange) are on screen,
    # and the page's own CSS uses neither.
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        near = (abs(rgb * 255 - color) < 24).all(axis=-1).sum()
        assert near > 200, f"plot colour {color} found in {near} pixels only"

    # Every embedded image decodes in the browser (a probe on a copy of the page reports it into the DOM).
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    proc = _run_chromium(exe, tmp_path, "--dump-dom", "--virtual-time-budget=2000", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _console_messages(proc.stderr) == []
    assert 'data-probe="images=4 broken=0"' in proc.stdout
    assert time.monotonic() - started < 20


def test_console_check_catches_errors(tmp_path: Path) -> None:
    """The console check above is not vacuous: a page with a script error trips it."""
    exe = _chromium()
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("boom"); null.x;</script></body></html>', encoding="utf-8")
    proc = _run_chromium(exe, tmp_path, "--dump-dom", bad.as_uri())
    messages = _console_messages(proc.stderr)
    assert any("boom" in m for m in messages) and any("Uncaught TypeError" in m for m in messages), proc.stderr
