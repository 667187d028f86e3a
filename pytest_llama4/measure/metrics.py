"""Serving metrics of a load run, defined exactly as TensorRT-LLM's benchmark_serving and `vllm bench serve`.

Source read: `calculate_metrics` in tensorrt_llm/serve/scripts/benchmark_serving.py and the OpenAI request
functions in tensorrt_llm/serve/scripts/backend_request_func.py (NVIDIA/TensorRT-LLM; adopted from vLLM's
benchmarks/benchmark_serving.py), checked against vllm/benchmarks/serve.py and
vllm/benchmarks/lib/endpoint_request_func.py (vllm-project/vllm), which compute the same figures.

Only successful requests enter the figures; failed ones are counted.
  completed               successful requests; `failed` the others (vLLM's `failed`).
  duration_s              wall time of the measured run (first send to last response), warm-up excluded.
  request_throughput      completed / duration_s (req/s).
  output_throughput       sum of completed requests' output tokens / duration_s (tok/s). Output tokens are the
                          server's `usage.completion_tokens`, as benchmark_serving takes them when present.
  total_token_throughput  (input + output tokens) / duration_s. One deliberate difference: input tokens are the
                          server's `usage.prompt_tokens` (chat template included), where benchmark_serving adds
                          its client-side count of the prompt text.
  ttft_ms                 time to first token: from sending the request to the first chunk whose `choices` is
                          non-empty (that chunk may carry no text).
  e2el_ms                 end-to-end latency: from sending to the last chunk (chat: the last data event before
                          `[DONE]`, usage chunk included; completions: the last chunk with choices).
  tpot_ms                 time per output token, excluding the first: (e2el - ttft) / (output_tokens - 1), over
                          requests with more than one output token.
  itl_ms                  inter-token latency: every gap between consecutive chunks of a request, pooled over
                          all requests. benchmark_serving appends one value per chunk and neither divides a gap by
                          the tokens the chunk carries nor repeats it: with trtllm-serve's `stream_interval: 4`
                          a chunk holds about 4 tokens, so ITL comes out about 4 x TPOT and there are about
                          OSL/4 values per request; TPOT is unaffected (SGLang's bench_serving divides and
                          repeats instead: do not compare its ITL with these). Dynamo's final chunk, which only
                          carries `finish_reason`, counts as a chunk too, exactly as there.
  goodput                 completed requests meeting every SLO in `goodput` ({"ttft_ms", "tpot_ms", "e2el_ms"}:
                          value <= SLO; a request with at most one output token has TPOT 0 here) / duration_s.
                          With no SLOs every completed request is good, so it equals request_throughput
                          (benchmark_serving leaves its unprinted request_goodput at 0 then).
Each latency gets `_mean`, `_median`, `_p90`, `_p99` (numpy's default linear-interpolation percentile). With no
values (every request failed) they are NaN, where benchmark_serving's `np.mean(x or 0)` reports 0: a run that
failed must not pass a latency ceiling.
"""

from __future__ import annotations

import itertools
import math

from .load import LoadResult, RequestRecord

GOODPUT_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")
LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


def percentile(values: list[float], p: float) -> float:
    """numpy.percentile(values, p) with its default (linear) interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _tpot(record: RequestRecord) -> float | None:
    """Seconds per output token after the first; None with at most one output token."""
    tokens = record.output_tokens or 0
    if tokens <= 1 or record.ttft is None:
        return None
    return (record.end - record.start - record.ttft) / (tokens - 1)


def _latencies(records: list[RequestRecord]) -> dict[str, list[float]]:
    """Per-metric values in seconds, over successful records."""
    ttft, tpot, itl, e2el = [], [], [], []
    for record in records:
        ttft.append(record.ttft or 0.0)
        e2el.append(record.end - record.start)
        if (value := _tpot(record)) is not None:
            tpot.append(value)
        times = record.chunk_times
        itl.extend(b - a for a, b in itertools.pairwise(times))
    return {"ttft_ms": ttft, "tpot_ms": tpot, "itl_ms": itl, "e2el_ms": e2el}


def summarize(result: LoadResult, goodput: dict[str, float] | None = None) -> dict[str, float]:
    """The run's figures as a flat dict (see the module docstring); `goodput` maps metric -> SLO in ms."""
    unknown = set(goodput or {}) - set(GOODPUT_KEYS)
    if unknown:
        raise ValueError(f"unknown goodput SLO(s) {sorted(unknown)}; use {', '.join(GOODPUT_KEYS)} (milliseconds)")
    done = [r for r in result.records if r.ok]
    duration = result.duration
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    output_tokens = sum(r.output_tokens or 0 for r in done)
    input_tokens = sum(r.prompt_tokens if r.prompt_tokens is not None else result.scenario.input_tokens
                       for r in done)
    good = sum(1 for r in done if _meets(r, goodput or {}))
    summary = {
        "completed": float(len(done)),
        "failed": float(len(result.records) - len(done)),
        "duration_s": duration,
        "total_input_tokens": float(input_tokens),
        "total_output_tokens": float(output_tokens),
        "request_throughput": rate(len(done)),
        "output_throughput": rate(output_tokens),
        "total_token_throughput": rate(input_tokens + output_tokens),
        "goodput": rate(good),
    }
    for name, values in _latencies(done).items():
        ms = [v * 1000 for v in values]
        summary[f"{name}_mean"] = sum(ms) / len(ms) if ms else math.nan
        summary[f"{name}_median"] = percentile(ms, 50)
        summary[f"{name}_p90"] = percentile(ms, 90)
        summary[f"{name}_p99"] = percentile(ms, 99)
    return summary


def _meets(record: RequestRecord, slos: dict[str, float]) -> bool:
    measured = {"ttft_ms": (record.ttft or 0.0) * 1000, "tpot_ms": (_tpot(record) or 0.0) * 1000,
                "e2el_ms": (record.end - record.start) * 1000}
    return all(measured[name] <= slo for name, slo in slos.items())


def samples(result: LoadResult) -> dict[str, list[float]]:
    """Per-request values of successful requests, for plots: `ttft_ms`, `e2el_ms`, `tpot_ms` (0 with at most one
    output token) and `request_start_s` aligned by request; `itl_ms` pooled. Rounded to microseconds."""
    done = [r for r in result.records if r.ok]
    return {
        "request_start_s": [round(r.start, 6) for r in done],
        "ttft_ms": [round((r.ttft or 0.0) * 1000, 3) for r in done],
        "e2el_ms": [round((r.end - r.start) * 1000, 3) for r in done],
        "tpot_ms": [round((_tpot(r) or 0.0) * 1000, 3) for r in done],
        "itl_ms": [round(v * 1000, 3) for v in _latencies(done)["itl_ms"]],
    }
