"""metrics.summarize / samples on hand-built runs whose figures are worked out by hand (benchmark_serving's
definitions: see the metrics module docstring)."""

from __future__ import annotations

import math

import pytest

from pytest_llama4.measure.load import LoadResult, RequestRecord, Scenario
from pytest_llama4.measure.metrics import GOODPUT_KEYS, percentile, samples, summarize

SCENARIO = Scenario("hand", input_tokens=10, output_tokens=5, num_prompts=4, concurrency=2)


def ok(start: float, chunks: list[float], end: float, out: int, prompt: int = 18) -> RequestRecord:
    return RequestRecord(start, end, chunks[0] - start, chunks, prompt, out, True, None)


def failed(start: float, end: float, error: str = "HTTP 500: boom") -> RequestRecord:
    return RequestRecord(start, end, None, [], None, None, False, error)


# Request A: 5 one-token chunks 100 ms apart after a 100 ms TTFT; ends with its last chunk at 0.5 s.
# Request B: starts at 0.1 s, 2 chunks of a 4-token stream_interval (5 tokens), TTFT 200 ms, ends at 0.9 s.
# Request C: a failure. Request D: one output token only.
A = ok(0.0, [0.1, 0.2, 0.3, 0.4, 0.5], 0.5, 5)
B = ok(0.1, [0.3, 0.7], 0.9, 5, prompt=20)
C = failed(0.2, 0.25)
D = ok(1.0, [1.05], 1.05, 1)
RESULT = LoadResult(SCENARIO, [A, B, C, D], duration=2.0, processes=1)


def test_counts_and_throughputs_count_only_completed_requests():
    figures = summarize(RESULT)
    assert figures["completed"] == 3 and figures["failed"] == 1
    assert figures["duration_s"] == 2.0
    assert figures["request_throughput"] == pytest.approx(1.5)
    assert figures["total_output_tokens"] == 11 and figures["output_throughput"] == pytest.approx(5.5)
    assert figures["total_input_tokens"] == 56  # the server's prompt_tokens: 18 + 20 + 18
    assert figures["total_token_throughput"] == pytest.approx((56 + 11) / 2)


def test_ttft_and_e2el():
    figures = summarize(RESULT)
    # TTFT: 100, 200, 50 ms; E2EL: 500, 800, 50 ms
    assert figures["ttft_ms_mean"] == pytest.approx(350 / 3)
    assert figures["ttft_ms_median"] == pytest.approx(100)
    assert figures["e2el_ms_mean"] == pytest.approx(450)
    assert figures["e2el_ms_median"] == pytest.approx(500)
    assert figures["e2el_ms_p90"] == pytest.approx(740)  # linear: 500 + 0.8 * (800 - 500)
    assert figures["e2el_ms_p99"] == pytest.approx(794)


def test_tpot_is_per_token_after_the_first_and_skips_single_token_requests():
    figures = summarize(RESULT)
    # A: (500 - 100) / 4 = 100; B: (800 - 200) / 4 = 150; D has one token: no TPOT
    assert figures["tpot_ms_mean"] == pytest.approx(125)
    assert figures["tpot_ms_median"] == pytest.approx(125)
    assert figures["tpot_ms_p99"] == pytest.approx(149.5)


def test_itl_is_one_gap_per_chunk_as_benchmark_serving_records_it():
    """A chunk carrying several tokens gives one gap, neither divided by its tokens nor repeated."""
    values = samples(RESULT)["itl_ms"]
    assert values == pytest.approx([100, 100, 100, 100, 400])  # A's four gaps, B's one 400 ms gap; D has none
    figures = summarize(RESULT)
    assert figures["itl_ms_mean"] == pytest.approx(160)
    assert figures["itl_ms_median"] == pytest.approx(100)
    assert figures["itl_ms_p90"] == pytest.approx(280)  # 100 + 0.6 * 300


def test_goodput_counts_requests_meeting_every_slo():
    assert summarize(RESULT, {"ttft_ms": 150})["goodput"] == pytest.approx(1.0)  # A and D
    assert summarize(RESULT, {"ttft_ms": 150, "e2el_ms": 400})["goodput"] == pytest.approx(0.5)  # D only
    # TPOT SLO 120 ms: A (100) and D (TPOT taken as 0 with one token) meet it, B (150) does not
    assert summarize(RESULT, {"tpot_ms": 120})["goodput"] == pytest.approx(1.0)
    assert summarize(RESULT, {"tpot_ms": 100})["goodput"] == pytest.approx(1.0)  # the SLO is inclusive
    assert summarize(RESULT, {"ttft_ms": 10})["goodput"] == 0.0
    # no SLO: every completed request is good; the failure never is
    assert summarize(RESULT)["goodput"] == summarize(RESULT)["request_throughput"] == pytest.approx(1.5)


def test_unknown_goodput_slo_is_rejected():
    with pytest.raises(ValueError, match="itl_ms"):
        summarize(RESULT, {"itl_ms": 10})
    assert set(GOODPUT_KEYS) == {"ttft_ms", "tpot_ms", "e2el_ms"}


def test_every_key_is_present():
    figures = summarize(RESULT)
    expected = {"completed", "failed", "duration_s", "request_throughput", "output_throughput",
                "total_token_throughput", "goodput"}
    expected |= {f"{m}_{s}" for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")
                 for s in ("mean", "median", "p90", "p99")}
    assert expected <= set(figures)
    assert all(isinstance(v, float) for v in figures.values())


def test_a_run_where_everything_failed_has_no_latency_and_no_throughput():
    result = LoadResult(SCENARIO, [failed(0, 1), failed(0, 2, "connect refused")], duration=2.0, processes=1)
    figures = summarize(result)
    assert figures["completed"] == 0 and figures["failed"] == 2
    assert figures["request_throughput"] == figures["output_throughput"] == figures["goodput"] == 0
    assert math.isnan(figures["ttft_ms_p99"]) and math.isnan(figures["e2el_ms_mean"])
    assert samples(result) == {"request_start_s": [], "ttft_ms": [], "e2el_ms": [], "tpot_ms": [], "itl_ms": []}


def test_samples_are_aligned_per_completed_request_and_rounded():
    result = LoadResult(SCENARIO, [ok(0.1234567891, [0.2234567891, 0.4], 0.4, 2), C], 1.0, 1)
    values = samples(result)
    assert values["request_start_s"] == [0.123457]
    assert values["ttft_ms"] == [100.0]
    assert values["e2el_ms"] == [276.543]
    assert values["tpot_ms"] == [176.543]
    assert values["itl_ms"] == [176.543]
    assert len(samples(RESULT)["tpot_ms"]) == 3 and samples(RESULT)["tpot_ms"][2] == 0.0  # D: one token


def test_percentile_matches_numpy_linear_interpolation():
    numpy = pytest.importorskip("numpy")
    data = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    for p in (0, 1, 50, 90, 99, 100):
        assert percentile(data, p) == pytest.approx(float(numpy.percentile(data, p)))
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
