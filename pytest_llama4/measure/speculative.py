"""Speculative decoding as the engine itself reports it: draft and accepted token counters, turned into the mean
acceptance length; and the mocker's configured decode speed-up, its stand-in for Eagle.

Counter names are TensorRT-LLM's (tensorrt_llm/metrics/collector.py; Dynamo's trtllm worker re-exports every
`trtllm_` metric on its DYN_SYSTEM_PORT /metrics when iteration stats are on). trtllm-serve's JSON `/metrics`
carries the same figures per iteration under `specDecodingStats` (drained on read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..deploy.engines.dynamo_mocker import read_engine_args

DRAFTED = "trtllm_spec_decode_num_draft_tokens_total"
ACCEPTED = "trtllm_spec_decode_num_accepted_tokens_total"
# vLLM's (vllm/v1/spec_decode/metrics.py SpecDecodingProm, 0.31.0): drafted and accepted tokens, and the drafting
# steps themselves (its own acceptance length is 1 + accepted / drafts, as acceptance_length computes it).
VLLM_DRAFTED = "vllm:spec_decode_num_draft_tokens_total"
VLLM_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
VLLM_DRAFTS = "vllm:spec_decode_num_drafts_total"
ENABLE_HINT = ("set `enable_iter_perf_stats: true` and `return_perf_metrics: true` in the engine config (the LLM-API "
               "YAML); Dynamo releases before ai-dynamo/dynamo#12162 set both when dynamo.trtllm is started with "
               "--publish-kv-events")


@dataclass(frozen=True)
class DraftCounters:
    drafted: float
    accepted: float
    # Decoding steps of drafting requests (numRequestsWithDraftTokens, summed over iterations), where the engine
    # reports them: TensorRT-LLM's iteration stats do; its Prometheus counters do not (collector.py has no such one).
    steps: float | None = None

    def __sub__(self, earlier: DraftCounters) -> DraftCounters:
        steps = None if self.steps is None or earlier.steps is None else self.steps - earlier.steps
        return DraftCounters(self.drafted - earlier.drafted, self.accepted - earlier.accepted, steps)

    def __add__(self, other: DraftCounters) -> DraftCounters:
        steps = None if self.steps is None or other.steps is None else self.steps + other.steps
        return DraftCounters(self.drafted + other.drafted, self.accepted + other.accepted, steps)


def from_prometheus(figures: dict[str, float]) -> DraftCounters | None:
    """TensorRT-LLM's counters, or vLLM's (with its count of drafting steps); None when the engine publishes
    neither."""
    if VLLM_DRAFTED in figures and VLLM_ACCEPTED in figures:
        return DraftCounters(figures[VLLM_DRAFTED], figures[VLLM_ACCEPTED], figures.get(VLLM_DRAFTS))
    if DRAFTED not in figures or ACCEPTED not in figures:
        return None
    return DraftCounters(figures[DRAFTED], figures[ACCEPTED])


def from_iteration_stats(rows: list[dict]) -> DraftCounters | None:
    """trtllm-serve's `GET /metrics` rows since the last read; None when no row has speculative stats."""
    stats = [row["specDecodingStats"] for row in rows if isinstance(row.get("specDecodingStats"), dict)]
    if not stats:
        return None
    steps = [s["numRequestsWithDraftTokens"] for s in stats if "numRequestsWithDraftTokens" in s]
    return DraftCounters(sum(s.get("numDraftTokens", 0) for s in stats),
                         sum(s.get("numAcceptedTokens", 0) for s in stats),
                         sum(steps) if len(steps) == len(stats) else None)


def acceptance_length(delta: DraftCounters, max_draft_len: int) -> float | None:
    """Mean tokens produced per decoding step of a drafting request: 1 + accepted drafts per step, TensorRT-LLM's
    per-iteration `acceptanceLength` ((accepted + requests with drafts) / requests with drafts) over the whole run.

    The steps are the engine's own count (`numRequestsWithDraftTokens`) where it reports one; else drafted /
    max_draft_len, exact while every step drafts max_draft_len tokens (Eagle's fixed draft length).
    """
    steps = delta.steps if delta.steps is not None else delta.drafted / max(max_draft_len, 1)
    if delta.drafted <= 0 or steps <= 0 or max_draft_len < 1:
        return None
    return 1.0 + delta.accepted / steps


def max_draft_len(engine_config: Path | None) -> int | None:
    """Tokens drafted per step: `speculative_config.max_draft_len` of an LLM-API YAML, or vLLM's
    `speculative-config.num_speculative_tokens`; None when the config has no speculative decoding."""
    if engine_config is None or not engine_config.is_file():
        return None
    config = yaml.safe_load(engine_config.read_text()) or {}
    speculative = config.get("speculative_config") or config.get("speculative-config") or {}
    if isinstance(speculative, str):  # vLLM takes it as a JSON string too
        speculative = yaml.safe_load(speculative) or {}
    value = speculative.get("max_draft_len") or speculative.get("num_speculative_tokens")
    return int(value) if value else None


def mocker_decode_speedup(engine_args_file: Path) -> float:
    """The mocker's effective decode speed-up: speedup_ratio x decode_speedup_ratio (0 = no simulated delay)."""
    args = read_engine_args(engine_args_file)
    return float(args.get("speedup_ratio", 1.0)) * float(args.get("decode_speedup_ratio", 1.0))
