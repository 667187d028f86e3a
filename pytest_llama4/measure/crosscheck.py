"""Does the server agree with the harness? Client-side TTFT and request counts against the frontend's own
Prometheus figures over the same scenario. A large disagreement means one of the two is lying."""

from __future__ import annotations

from dataclasses import dataclass

# (sum, count) of the server's TTFT histogram: Dynamo's frontend, or vLLM's server (vllm/v1/metrics/loggers.py).
TTFT_SERIES = (("dynamo_frontend_time_to_first_token_seconds_sum", "dynamo_frontend_time_to_first_token_seconds_count"),
               ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"))
DEFAULT_TOLERANCE_MS = 25.0
DEFAULT_TOLERANCE_PCT = 50.0


@dataclass(frozen=True)
class CrossCheck:
    server_requests: float
    client_requests: int
    server_ttft_ms_mean: float | None
    client_ttft_ms_mean: float
    problems: tuple[str, ...]


def published(metrics: dict[str, float]) -> bool:
    """Whether the server publishes a TTFT histogram we know; without one there is nothing to cross-check."""
    return any(count in metrics for _, count in TTFT_SERIES)


def compare(before: dict[str, float], after: dict[str, float], client_requests: int, client_ttft_ms_mean: float,
            tolerance_ms: float = DEFAULT_TOLERANCE_MS, tolerance_pct: float = DEFAULT_TOLERANCE_PCT) -> CrossCheck:
    """`client_requests` counts every request the client sent in the window (warm-up included), so the
    frontend must have seen exactly as many first tokens. TTFT: the client's mean includes HTTP and network time
    the server cannot see, so it may exceed the server's, but not by more than the tolerance (ms or percent)."""
    ttft_sum, ttft_count = next((pair for pair in TTFT_SERIES if pair[1] in after), TTFT_SERIES[0])
    count = after.get(ttft_count, 0.0) - before.get(ttft_count, 0.0)
    total = after.get(ttft_sum, 0.0) - before.get(ttft_sum, 0.0)
    server_mean = total / count * 1000 if count else None
    problems = []
    if round(count) != client_requests:
        problems.append(f"the frontend counted {count:g} first tokens, the client {client_requests} requests")
    if server_mean is not None:
        gap = abs(client_ttft_ms_mean - server_mean)
        if gap > tolerance_ms and gap > tolerance_pct / 100 * max(server_mean, client_ttft_ms_mean):
            problems.append(f"mean TTFT: client {client_ttft_ms_mean:.1f} ms, frontend {server_mean:.1f} ms "
                            f"(apart by {gap:.1f} ms, beyond {tolerance_ms:g} ms and {tolerance_pct:g}%)")
    return CrossCheck(count, client_requests, server_mean, client_ttft_ms_mean, tuple(problems))
