"""Acceptance length from TensorRT-LLM's counters and iteration stats, the mocker's configured speed-up, and the
golden-file comparison: pure functions, fed the formats the engines publish."""

from __future__ import annotations

import json

import pytest

from pytest_llama4.measure import golden, prometheus, speculative

# As Dynamo's trtllm worker re-exports TensorRT-LLM's collector (labels added by Dynamo).
WORKER_METRICS = """\
# HELP trtllm_spec_decode_num_draft_tokens_total Draft tokens proposed
# TYPE trtllm_spec_decode_num_draft_tokens_total counter
trtllm_spec_decode_num_draft_tokens_total{dynamo_component="backend",engine_type="trtllm",model_name="m"} 300
trtllm_spec_decode_num_accepted_tokens_total{dynamo_component="backend",engine_type="trtllm",model_name="m"} 190
trtllm_spec_decode_acceptance_length{dynamo_component="backend",engine_type="trtllm",model_name="m"} 0
"""


def test_counters_from_a_worker_metrics_page():
    assert speculative.from_prometheus(prometheus.parse(WORKER_METRICS)) == speculative.DraftCounters(300, 190)


def test_no_counters_when_the_engine_publishes_none():
    assert speculative.from_prometheus(prometheus.parse("dynamo_component_requests_total 4\n")) is None
    assert speculative.from_iteration_stats([{"iter": 1, "gpuMemUsage": 10}]) is None


def test_counters_from_trtllm_serve_iteration_stats():
    rows = [{"iter": 1, "specDecodingStats": {"numDraftTokens": 12, "numAcceptedTokens": 9,
                                              "numRequestsWithDraftTokens": 4, "acceptanceLength": 3.25}},
            {"iter": 2, "specDecodingStats": {"numDraftTokens": 6, "numAcceptedTokens": 2,
                                              "numRequestsWithDraftTokens": 2, "acceptanceLength": 2.0}}]
    assert speculative.from_iteration_stats(rows) == speculative.DraftCounters(18, 11, steps=6)
    # the engine's own step count wins over drafted / max_draft_len: (11 + 6) / 6, whatever max_draft_len says
    assert speculative.acceptance_length(speculative.from_iteration_stats(rows), 5) == pytest.approx(17 / 6)
    without_steps = [{"specDecodingStats": {"numDraftTokens": 12, "numAcceptedTokens": 9}}]
    assert speculative.from_iteration_stats(without_steps).steps is None


def test_acceptance_length_matches_trtllm_per_iteration_definition():
    # 4 requests drafting 3 tokens each, 9 accepted: TensorRT-LLM reports (9 + 4) / 4 = 3.25.
    assert speculative.acceptance_length(speculative.DraftCounters(12, 9), 3) == pytest.approx(3.25)
    # Deltas between two scrapes: 120 steps of one draft token, 90 accepted -> 1.75.
    before, after = speculative.DraftCounters(100, 40), speculative.DraftCounters(220, 130)
    assert speculative.acceptance_length(after - before, 1) == pytest.approx(1.75)
    assert speculative.acceptance_length(speculative.DraftCounters(0, 0), 3) is None


def test_max_draft_len_of_the_shipped_engine_configs(tmp_path):
    from pytest_llama4.config.paths import PROJECT_ROOT
    configs = PROJECT_ROOT / "engine_configs" / "llama4"
    assert speculative.max_draft_len(configs / "eagle" / "eagle_decode.yaml") == 1
    assert speculative.max_draft_len(configs / "eagle_one_model" / "eagle_decode.yaml") == 3
    plain = tmp_path / "plain.yaml"
    plain.write_text("max_batch_size: 8\n")
    assert speculative.max_draft_len(plain) is None


def test_mocker_decode_speedup_multiplies_both_ratios(tmp_path):
    args = tmp_path / "decode-0.json"
    args.write_text(json.dumps({"speedup_ratio": 5, "decode_speedup_ratio": 1.8}))
    assert speculative.mocker_decode_speedup(args) == pytest.approx(9.0)
    args.write_text(json.dumps({"speedup_ratio": 5}))
    assert speculative.mocker_decode_speedup(args) == 5


def test_golden_differences_show_where_texts_part(tmp_path):
    path = tmp_path / "golden.json"
    golden.record(path, {"a": "same text", "b": "hello world"}, {"engine": "x"})
    recorded = golden.load(path)
    provenance = recorded["recorded_with"]
    assert provenance["engine"] == "x" and provenance["method"] == "each prompt sent alone, temperature 0, seed 0"
    assert provenance["host"] and provenance["recorded_at"].endswith("+00:00")
    assert golden.differences(recorded["outputs"], {"a": "same text", "b": "hello there"}) == [
        "'b': differs from character 6: golden 'world', now 'there'"]
    assert golden.differences(recorded["outputs"], {"a": "same text"}) == ["'b': no output"]
