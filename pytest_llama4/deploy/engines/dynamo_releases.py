"""What each Dynamo release's `dynamo.trtllm` worker is, read from the released ai-dynamo wheels themselves
(tests/test_dynamo_releases.py downloads each wheel and checks every entry against its source files).

- `components`: the Dynamo component each role registers under, as the frontend's /health lists it. 0.4-0.6:
  `DEFAULT_ENDPOINT` / `DEFAULT_NEXT_ENDPOINT` in dynamo/trtllm/utils/trtllm_utils.py (the prefill worker is the
  "next" one under the seed's decode_first strategy); 1.0 and newer: `DEFAULT_ENDPOINT_COMPONENT` /
  `DEFAULT_PREFILL_COMPONENT` in dynamo/trtllm/args.py.
- `metrics_flag`: what makes the worker collect TensorRT-LLM's engine metrics (the speculative-decoding draft and
  accepted counters among them) onto its own metrics endpoint (DYN_SYSTEM_PORT). 1.0-1.2:
  `--publish-events-and-metrics`; 1.3-1.4: `--publish-kv-events`, whose dest is still `publish_events_and_metrics`
  (the old flag is its alias); 1.6: `--publish-metrics`. 0.4-0.6 have no bridge: None.
- `system_env`: what the worker's system server (its /health and /metrics on DYN_SYSTEM_PORT) needs besides the port:
  `DYN_SYSTEM_ENABLED=true` before 0.7 (read by the Rust runtime, ai-dynamo-runtime, not by these files).
- `mocker_args_nested`: the layout of the mocker's --extra-engine-args file. Flat before 1.6 (1.4.2's args.py reads
  the JSON keys directly; 1.5.0 too); 1.6 normalizes it (dynamo/mocker/config.py `normalize_mocker_config`) into
  the launch keys of `build_mocker_engine_args` (MOCKER_LAUNCH_KEYS) beside an "engine" object, and rejects a flat
  file ("unknown field `max_model_len`").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...config.topology import DECODE, PREFILL, WORKER

# 1.6's mocker file: these keys beside "engine" (every other engine setting goes inside it).
MOCKER_LAUNCH_KEYS = ("dp_size", "startup_time", "gpu_memory_utilization", "mem_fraction_static",
                      "free_gpu_memory_fraction")
# The TensorRT-LLM each checked release pins (its wheel's `tensorrt-llm==` requirement under the `trtllm` extra) and
# the day PyPI got that TensorRT-LLM. Its Prometheus speculative-decoding counters (trtllm_spec_decode_*, in
# tensorrt_llm/metrics/collector.py) came with TensorRT-LLM PR #12545, merged on SPEC_COUNTERS_MERGED: a TensorRT-LLM
# published before that day cannot have them. (Its per-iteration log line, print_iter_log, never carries draft or
# accepted counts, and its iteration stats fill them only since PR #9855, December 2025: no fallback before either.)
TRTLLM_PINNED = {"0.4.1": ("1.0.0rc6", "2025-08-07"), "0.5.1": ("1.1.0rc5", "2025-09-17"),
                 "0.6.0": ("1.1.0rc5", "2025-09-17"), "1.0.0": ("1.3.0rc5.post1", "2026-03-06"),
                 "1.2.0.post1": ("1.3.0rc14", "2026-05-07"), "1.3.1": ("1.3.0rc19", None),
                 "1.4.2": ("1.3.0rc22", "2026-07-22"), "1.6.1": ("1.3.0rc29", "2026-09-29")}
SPEC_COUNTERS_MERGED = "2026-03-25"
RELEASES_CHECKED = ("0.4.1", "0.5.1", "0.6.0", "1.0.0", "1.2.0.post1", "1.3.1", "1.4.2", "1.6.1")


@dataclass(frozen=True)
class DynamoRelease:
    since: str  # the first release of this range (RELEASES_CHECKED holds the ones read)
    aggregated: str  # the component of agg and decode workers
    prefill: str
    metrics_flag: str | None
    system_env: Mapping[str, str] = field(default_factory=dict)
    mocker_args_nested: bool = False

    @property
    def components(self) -> dict[str, str]:
        return {WORKER: self.aggregated, PREFILL: self.prefill, DECODE: self.aggregated}


RELEASES = (
    DynamoRelease("0.4", "tensorrt_llm", "tensorrt_llm_next", None, {"DYN_SYSTEM_ENABLED": "true"}),
    DynamoRelease("0.7", "tensorrt_llm", "tensorrt_llm_next", None),  # no wheel of 0.7 read: 0.6's names kept
    DynamoRelease("1.0", "tensorrt_llm", "prefill", "--publish-events-and-metrics"),
    DynamoRelease("1.3", "backend", "prefill", "--publish-kv-events"),
    DynamoRelease("1.6", "backend", "prefill", "--publish-metrics", mocker_args_nested=True),
)


def release_number(version: str) -> tuple[int, int]:
    match = re.match(r"^\s*v?(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not a Dynamo version: {version!r} (expected e.g. '1.6.1')")
    return int(match[1]), int(match[2])


def release(version: str) -> DynamoRelease:
    """The table entry of a Dynamo release, e.g. '1.4.2' -> the 1.3 entry. Before 0.4 is unknown: ValueError."""
    number = release_number(version)
    known = [entry for entry in RELEASES if release_number(entry.since) <= number]
    if not known:
        raise ValueError(f"Dynamo {version} predates the multinode TRT-LLM scripts; use {RELEASES[0].since}+")
    return known[-1]


def counters_predate(version: str) -> str | None:
    """Why a worker of this Dynamo release with its pinned TensorRT-LLM publishes no speculative-decoding counters,
    or None when it should (or the release is not one read here)."""
    pinned, published = TRTLLM_PINNED.get(version, (None, None))
    if pinned is None or published is None or published >= SPEC_COUNTERS_MERGED:
        return None
    return (f"Dynamo {version} pins TensorRT-LLM {pinned} (on PyPI since {published}), older than TensorRT-LLM's "
            f"speculative-decoding counters (trtllm_spec_decode_*, PR #12545, merged {SPEC_COUNTERS_MERGED}); its "
            "print_iter_log line carries no draft or accepted counts, so acceptance cannot be measured on it")
