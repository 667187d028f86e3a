"""Speculative decoding: drafts are accepted at the profile's rate (the engine's own counters), greedy text equals
the golden file recorded from the same configuration, and, on the mocker, the decode speed-up it models shows up
in inter-token latency against the same deployment at ratio 1."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from pytest_llama4.config.topology import DECODE, WORKER, Service
from pytest_llama4.deploy import services
from pytest_llama4.measure import golden, prometheus, speculative, validity
from pytest_llama4.measure.load import Scenario, run_load
from pytest_llama4.measure.metrics import summarize
from pytest_llama4.measure.results import AcceptanceResult

pytestmark = pytest.mark.speculative

ACCEPTANCE_REQUESTS = 16
ACCEPTANCE_CONCURRENCY = 4  # TensorRT-LLM's published acceptance figures are taken at concurrency 4
# The ITL comparison: a closed loop long enough for a stable median, short enough for a mocker at ratio 1.
ITL_SCENARIO = Scenario("speculative-itl", input_tokens=128, output_tokens=48, num_prompts=12, concurrency=4)


def _greedy(api, prompt: str) -> str:
    """Greedy decoding without ignore_eos: forced generation past EOS would make drafts (and text) meaningless."""
    response = api.post("/v1/chat/completions", api.chat_body(prompt, max_tokens=golden.MAX_TOKENS, temperature=0,
                                                               seed=0))
    assert response.status_code == 200, f"{prompt!r}: HTTP {response.status_code}: {response.text[:300]}"
    return response.json()["choices"][0]["message"]["content"] or ""


def _drafting_workers(records: list[services.ServiceRecord]) -> list[services.ServiceRecord]:
    return [r for r in records if r.role in (WORKER, DECODE) and r.metrics_url]


def _read_counters(base_url: str, workers: list[services.ServiceRecord]) -> tuple[
        speculative.DraftCounters | None, bool]:
    """(counters summed over the drafting workers' metrics, or read from the endpoint itself when we did not launch
    it; whether reading drained them). trtllm-serve: Prometheus at /prometheus/metrics, else its iteration stats,
    a JSON list at /metrics that each read drains; vLLM: Prometheus at /metrics."""
    if workers:
        found = [speculative.from_prometheus(prometheus.read(w.metrics_url) or {})
                 for w in workers]
        return (None if None in found else sum(found[1:], found[0])), False
    for path in ("/prometheus/metrics", "/metrics"):
        response = requests.get(f"{base_url}{path}", timeout=10)
        if response.status_code != 200:
            continue
        if response.text.lstrip().startswith("["):
            return speculative.from_iteration_stats(response.json()), True
        counters = speculative.from_prometheus(prometheus.parse(response.text))
        if counters is not None:
            return counters, False
    return None, False


def _draft_config(settings, engine) -> Path | None:
    """The engine config of the drafting workers (decode in disagg): the one given, else the engine's own."""
    role = DECODE if settings.topology == "disagg" else WORKER
    given = settings.decode_engine_config if role == DECODE else settings.engine_config
    return settings.on_host(given) if given else engine.default_engine_config(Service(role, 0, node=0))


def test_acceptance_length_meets_the_profile_floor(api, deployment, llama4_settings, llama4_engine, profile,
                                                   record_testsuite_property, acceptance_log):
    if not llama4_engine.drafts_tokens:
        pytest.skip(f"the {llama4_engine.name} does not draft tokens (engine={llama4_engine.name}): its decode "
                    "speed-up is checked by test_mocker_decode_speedup_shows_in_itl")
    missing = llama4_engine.draft_counters_missing(deployment.settings.dynamo_version)
    if missing:
        pytest.skip(missing)
    floor = profile.speculative.get("acceptance_length_floor")
    if floor is None:
        pytest.skip(f"profile {profile.name} sets no speculative.acceptance_length_floor")
    config = _draft_config(llama4_settings, llama4_engine)
    draft_len = speculative.max_draft_len(config)
    assert draft_len, (f"the engine config {config} has no speculative_config.max_draft_len (vLLM: speculative-config"
                       ".num_speculative_tokens): this deployment does not decode speculatively")
    workers = _drafting_workers(deployment.services)
    before, _ = _read_counters(deployment.base_url, workers)
    with ThreadPoolExecutor(ACCEPTANCE_CONCURRENCY) as pool:
        list(pool.map(lambda i: _greedy(api, golden.PROMPTS[i % len(golden.PROMPTS)]), range(ACCEPTANCE_REQUESTS)))
    after, drained = _read_counters(deployment.base_url, workers)
    unpublished = llama4_engine.draft_counters_unpublished(deployment.settings.dynamo_version)
    if (before is None or after is None) and unpublished:
        pytest.skip(unpublished)
    assert before is not None and after is not None, (
        f"no speculative-decoding counters ({speculative.DRAFTED}, {speculative.ACCEPTED}; vLLM: "
        f"{speculative.VLLM_DRAFTED}) on {', '.join(w.metrics_url for w in workers) or deployment.base_url}, so "
        f"the drafter is off or unobservable. TensorRT-LLM: {speculative.ENABLE_HINT}. vLLM publishes them when it "
        "runs with --speculative-config")
    delta = after if drained else after - before
    length = speculative.acceptance_length(delta, draft_len)
    assert length is not None, f"{ACCEPTANCE_REQUESTS} requests drafted no tokens (counters moved by {delta})"
    record_testsuite_property("speculative.acceptance_length", f"{length:.3f}")
    acceptance_log(AcceptanceResult(length, delta.drafted, delta.accepted, delta.steps, draft_len, floor))
    assert length >= floor, (f"acceptance length {length:.2f} (max_draft_len {draft_len}: {delta.accepted:g} of "
                             f"{delta.drafted:g} drafted tokens accepted) is under the floor {floor} of profile "
                             f"{profile.name}")


@pytest.mark.exclusive  # alone on the deployment: see the docstring
def test_greedy_outputs_match_the_golden_file(api, llama4_settings, llama4_engine):
    """Each prompt is sent alone, one after the other, on an otherwise idle deployment, as when the file was
    recorded: a GPU engine's temperature-0 text may change with batch composition, which is no regression."""
    if not llama4_engine.deterministic_text:
        pytest.skip(f"the {llama4_engine.name}'s tokens are random ids whatever the temperature "
                    f"(engine={llama4_engine.name}): greedy text cannot be compared")
    path = llama4_settings.golden_file
    outputs = {prompt: _greedy(api, prompt) for prompt in golden.PROMPTS}
    if llama4_settings.record_golden:
        golden.record(path, outputs, {"engine": llama4_settings.engine, "model": llama4_settings.served_model_name,
                                      "engine_config": str(_draft_config(llama4_settings, llama4_engine) or "")})
        pytest.skip(f"recorded {len(outputs)} greedy outputs in {path}: rerun without --record-golden to compare")
    if not path.is_file():
        pytest.skip(f"no golden file {path}: record one from a known-good deployment with --record-golden")
    recorded = golden.load(path)
    changed = golden.differences(recorded["outputs"], outputs)
    assert not changed, (f"{len(changed)} of {len(outputs)} greedy outputs differ from {path} (recorded with "
                         f"{recorded.get('recorded_with')}):\n  " + "\n  ".join(changed))


def _tpot_ms_median(base_url: str, model: str, tokenizer_dir) -> float:
    """Median over requests of the mean inter-token latency (TPOT): unlike single chunk gaps, it stays above zero
    when a fast engine's tokens arrive several to a read; 0 only when whole answers arrive in one read."""
    result = run_load(base_url, model, ITL_SCENARIO, tokenizer_path=tokenizer_dir)
    invalid = validity.problems(result, max_error_rate_pct=0)
    assert not invalid, f"{ITL_SCENARIO.name} at {base_url} is not a valid measurement:\n" + "\n".join(invalid)
    return summarize(result)["tpot_ms_median"]


@pytest.mark.slow
@pytest.mark.exclusive  # measures latency; a second deployment shares the machine meanwhile
def test_mocker_decode_speedup_shows_in_itl(deployment, llama4_settings, llama4_engine, profile, private_deployments,
                                            tokenizer_dir, record_testsuite_property):
    if llama4_engine.drafts_tokens:
        pytest.skip(f"the {llama4_engine.name} drafts real tokens: test_acceptance_length_meets_the_profile_floor "
                    "measures its speculative decoding")
    speedup = _configured_speedup(deployment.run_dir)
    if speedup == 0:
        pytest.skip("--speedup-ratio=0 removes the mocker's simulated delays: there is no decode speed to compare")
    with private_deployments("ratio-1", speedup_ratio=1.0) as slow:
        slow_itl = _tpot_ms_median(slow.base_url, slow.served_model, tokenizer_dir)
        expected = speedup / _configured_speedup(slow.run_dir)
    assert slow_itl > 0, f"no inter-token latency measured at ratio 1 ({slow.base_url})"
    itl = _tpot_ms_median(deployment.base_url, deployment.served_model, tokenizer_dir)
    if itl == 0:
        pytest.fail(f"the mocker runs decode {expected:g}x faster than at ratio 1, but the mean inter-token latency "
                    f"cannot be measured at that speed: whole answers arrive in one read ({slow_itl:.2f} ms at "
                    "ratio 1)")
    observed = slow_itl / itl
    tolerance = profile.speculative.get("decode_speedup_tolerance", 0.5)
    record_testsuite_property("speculative.mocker_itl_speedup", f"{observed:.2f}")
    assert observed >= tolerance * expected, (
        f"the mocker runs decode {expected:g}x faster than at ratio 1, but the mean inter-token latency is only "
        f"{observed:.2f}x "
        f"shorter ({itl:.2f} ms against {slow_itl:.2f} ms); the profile {profile.name} asks for at least "
        f"{tolerance:g} of the configured speed-up")


def _configured_speedup(run_dir: Path) -> float:
    """The decode speed-up the run's decoding mocker workers were started with (their resolved engine args)."""
    configs = sorted((run_dir / "engine_configs").glob("*.json"))
    decoding = [c for c in configs if c.name.startswith((WORKER, DECODE))]
    assert decoding, f"no resolved mocker engine args under {run_dir / 'engine_configs'}"
    return min(speculative.mocker_decode_speedup(c) for c in decoding)
