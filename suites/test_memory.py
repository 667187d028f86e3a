"""Memory: every service's host RSS stays under the profile's limit during the heaviest throughput scenario, no
worker logs an out-of-memory line and every worker is alive after it, prompts that fill the engine's
max_num_tokens complete, and the workers' KV-cache usage stays in range."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pytest_llama4.config.topology import WORKER_ROLES
from pytest_llama4.deploy import engine_limits, readiness, services
from pytest_llama4.measure import host_memory, kv_usage, oom
from pytest_llama4.measure.load import LoadResult, Scenario, make_prompts, run_load
from pytest_llama4.measure.profiles import Profile, ProfileScenario

pytestmark = pytest.mark.memory

RSS_INTERVAL = 0.5  # seconds between host RSS readings during the heaviest scenario
KV_INTERVAL = 0.05  # KV usage changes with every scheduler step: sample fast enough to see a short load
KV_IDLE_TIMEOUT = 10.0  # seconds the KV usage gets to fall back to its idle level after the load
STRESS_OUTPUT_TOKENS = engine_limits.STRESS_OUTPUT_TOKENS
STRESS_CONCURRENCY = 4  # "a few" prompts at once: enough to queue behind one another in the scheduler
STRESS_TIMEOUT = 600.0  # an 8k-token prefill behind three others on a loaded cluster engine


# ---------------------------------------------------------------------------------------------------- fixtures


@dataclass
class HeaviestLoad:
    scenario: Scenario
    result: LoadResult
    samples: list[list[host_memory.ServiceMemory]]  # host RSS readings taken during the load


def heaviest_scenario(profile: Profile, topology: str) -> ProfileScenario | None:
    """The scenario holding the most tokens in flight: (input + output) x concurrency for a closed loop; for an
    open loop the arrival rate times the profile's own end-to-end latency ceiling (Little's law), or one second
    of arrivals when it sets none."""
    def weight(entry: ProfileScenario) -> float:
        scenario = entry.scenario
        if scenario.concurrency is not None:
            in_flight = float(scenario.concurrency)
        else:
            ceilings = [lim.limit / 1000 for lim in entry.limits
                        if lim.metric.startswith("e2el_ms") and lim.kind == "ceiling"]
            in_flight = scenario.request_rate * (max(ceilings) if ceilings else 1.0)
        return (scenario.input_tokens + scenario.output_tokens) * min(in_flight, scenario.num_prompts)

    return max(profile.scenarios_for(topology), key=weight, default=None)


@pytest.fixture(scope="module")
def heaviest_load(deployment, profile, tokenizer_dir, service_processes, llama4_settings, load_progress
                  ) -> Callable[[], HeaviestLoad]:
    """Runs the heaviest scenario once, on first use (inside the calling test, so under its exclusive run lock),
    sampling every service's host RSS while it runs."""
    done: list[HeaviestLoad] = []

    def get() -> HeaviestLoad:
        if not done:
            entry = heaviest_scenario(profile, llama4_settings.topology)
            if entry is None:
                pytest.skip(f"profile {profile.name} has no scenario for --topology={llama4_settings.topology}")
            read = service_processes.read if not isinstance(service_processes, str) else list
            result, samples = host_memory.sample_during(
                lambda: run_load(deployment.base_url, deployment.served_model, entry.scenario,
                                 tokenizer_path=tokenizer_dir, progress=load_progress), read, RSS_INTERVAL)
            done.append(HeaviestLoad(entry.scenario, result, samples))
        return done[0]

    return get


# ---------------------------------------------------------------------------------------------------- helpers


def assert_no_oom_line(records: list[services.ServiceRecord], after: str) -> None:
    hits = oom.scan(Path(r.log) for r in records if r.role in WORKER_ROLES)
    assert not hits, f"out-of-memory lines in worker logs after {after}:\n{oom.report(hits)}"


def assert_workers_alive(deployment, engine, service_processes: host_memory.ProcessSource | str, after: str) -> None:
    """Every planned worker still listed by the frontend's /health and, where its processes can be read, running
    (/health notices a dead worker only when its discovery lease expires: about 12 s with the file backend)."""
    components = engine.health_components(deployment.settings.dynamo_version)
    dead = []
    if components:  # a Dynamo frontend lists its workers; a standalone server is its own worker, checked below
        health = requests.get(f"{deployment.base_url}/health", timeout=10).json()
        dead = [text for _, text in readiness.missing_workers(deployment.plan, health, components)]
    if not isinstance(service_processes, str):
        live = {usage.service for usage in service_processes.read()}
        dead += [f"{w.name}: no live process labelled {host_memory.run_label(service_processes)}"
                 for w in deployment.plan.workers if w.name not in live]
    assert not dead, f"worker(s) gone after {after}:\n  " + "\n  ".join(dead)


# ---------------------------------------------------------------------------------------------------- tests


def test_peak_gpu_memory_stays_under_the_limit(gpu_monitor, profile, deployment, tokenizer_dir, llama4_settings,
                                               record_testsuite_property, load_progress):
    """Its own run of the heaviest scenario, so the GPU samples cover that load whatever ran before."""
    limit = profile.memory.get("gpu_memory_used_fraction")
    if limit is None:
        pytest.skip(f"profile {profile.name} sets no memory.gpu_memory_used_fraction")
    entry = heaviest_scenario(profile, llama4_settings.topology)
    if entry is None:
        pytest.skip(f"profile {profile.name} has no scenario for --topology={llama4_settings.topology}")
    run_load(deployment.base_url, deployment.served_model, entry.scenario, tokenizer_path=tokenizer_dir,
             progress=load_progress)
    totals = {(s.node, s.gpu): s.memory_total_mib for s in gpu_monitor.samples if s.memory_total_mib}
    peaks = gpu_monitor.peak_used_mib()
    assert peaks, "the GPU monitor took no memory sample during the scenario"
    for node, mib in gpu_monitor.node_peak_used_mib().items():
        record_testsuite_property(f"memory.{node}.peak_gpu_used_mib", f"{mib:.0f}")
    rows = [(node, gpu, used, totals.get((node, gpu))) for (node, gpu), used in sorted(peaks.items())]
    unknown = [f"{node} GPU {gpu} (peak {used:.0f} MiB)" for node, gpu, used, total in rows if not total]
    assert not unknown, (f"the GPU monitor reported no total memory for {', '.join(unknown)}, so the limit of "
                         f"{limit:.0%} cannot be checked: see the telemetry source's log (nvidia-smi "
                         "--query-gpu=memory.total) on that node")
    over = [row for row in rows if row[2] / row[3] > limit]
    assert not over, (f"GPU memory above {limit:.0%} of a GPU during {entry.scenario.name}:\n"
                      f"{'node':<16} {'gpu':>3} {'peak MiB':>10} {'total MiB':>10} {'used':>6}\n" + "\n".join(
                          f"{node:<16} {gpu:>3} {used:>10.0f} {total:>10.0f} {used / total:>6.1%}"
                          for node, gpu, used, total in over))


def test_host_rss_of_every_service_stays_under_its_limit(heaviest_load, profile, service_processes, deployment,
                                                         record_testsuite_property):
    if isinstance(service_processes, str):
        pytest.skip(service_processes)
    limits = profile.memory.get("host_rss_mib")
    if not limits:
        pytest.skip(f"profile {profile.name} sets no memory.host_rss_mib")
    load = heaviest_load()
    rows = host_memory.rows(host_memory.peaks(load.samples), limits)
    record_testsuite_property("memory.heaviest_scenario", load.scenario.name)
    for row in rows:
        record_testsuite_property(f"memory.{row.service}.{row.node}.peak_rss_mib", f"{row.peak_mib:.1f}")
    seen = {row.service for row in rows}
    unseen = [r.name for r in deployment.services if r.name not in seen]  # what was launched, not the plan
    assert not unseen, (f"no process of service(s) {', '.join(unseen)} found by label "
                        f"{host_memory.run_label(service_processes)} during {load.scenario.name}")
    assert all(row.ok for row in rows), (
        f"host RSS over the profile's memory.host_rss_mib during {load.scenario.name} "
        f"({len(load.samples)} readings, every {RSS_INTERVAL:g}s):\n{host_memory.table(rows)}")


def test_no_worker_logged_out_of_memory(heaviest_load, launched_services):
    assert_no_oom_line(launched_services, heaviest_load().scenario.name)


def test_every_worker_survived_the_heaviest_scenario(heaviest_load, launched_services, deployment, llama4_engine,
                                                     service_processes):
    load = heaviest_load()
    assert_workers_alive(deployment, llama4_engine, service_processes, load.scenario.name)
    failed = [r for r in load.result.records if not r.ok]
    assert not failed, (f"{len(failed)} of {len(load.result.records)} requests of {load.scenario.name} failed, "
                        f"first: {failed[0].error}")


def exact_prompts(tokenizer_dir: Path, total_tokens: int, count: int) -> list[tuple[str, int]]:
    """`count` prompts that encode to `total_tokens` tokens with the tokenizer's special tokens (a BOS, if it
    adds one), each with the count it really encodes to (a BPE merge can leave one a token off)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    specials = len(tokenizer.encode("word").ids) - len(tokenizer.encode("word", add_special_tokens=False).ids)
    scenario = Scenario("stress", input_tokens=total_tokens - specials, output_tokens=STRESS_OUTPUT_TOKENS,
                        num_prompts=count, concurrency=count, warmup=0, seed=total_tokens)
    return [(p, len(tokenizer.encode(p).ids)) for p in make_prompts(scenario, tokenizer_dir)]


def _complete(base_url: str, model: str, prompt: str) -> tuple[int, dict | str]:
    response = requests.post(f"{base_url}/v1/completions", timeout=STRESS_TIMEOUT, json={
        "model": model, "prompt": prompt, "max_tokens": STRESS_OUTPUT_TOKENS, "temperature": 0})
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text[:300]


def stress_problems(answers: list[tuple[int, dict | str]], expected: list[int]) -> list[str]:
    problems = []
    for i, ((status, body), sent) in enumerate(zip(answers, expected, strict=True)):
        if status != 200 or not isinstance(body, dict):
            problems.append(f"request {i}: HTTP {status}: {str(body)[:300]}")
            continue
        finish = (body.get("choices") or [{}])[0].get("finish_reason")
        prompt_tokens = (body.get("usage") or {}).get("prompt_tokens")
        if finish not in ("length", "stop"):
            problems.append(f"request {i}: finish_reason {finish!r}")
        if prompt_tokens != sent:
            problems.append(f"request {i}: usage.prompt_tokens {prompt_tokens}, sent {sent}")
    return problems


def test_prompts_filling_max_num_tokens_complete(stress_prompt_tokens, deployment, llama4_engine,
                                                 tokenizer_dir, service_processes):
    if tokenizer_dir is None:
        pytest.skip("token-exact prompts need the served model's tokenizer on this machine (--model=<local dir "
                    "with tokenizer.json>)")
    prompts = exact_prompts(tokenizer_dir, stress_prompt_tokens, STRESS_CONCURRENCY)
    with ThreadPoolExecutor(STRESS_CONCURRENCY) as pool:
        answers = list(pool.map(lambda p: _complete(deployment.base_url, deployment.served_model, p[0]), prompts))
    problems = stress_problems(answers, [sent for _, sent in prompts])
    assert not problems, (f"{STRESS_CONCURRENCY} concurrent prompts of {stress_prompt_tokens} tokens:\n  "
                          + "\n  ".join(problems))
    records = deployment.services
    if deployment.plan is not None and records:  # logs and processes are ours to check
        after = f"{STRESS_CONCURRENCY} prompts of {stress_prompt_tokens} tokens"
        assert_no_oom_line(records, after)
        assert_workers_alive(deployment, llama4_engine, service_processes, after)


# ---------------------------------------------------------------------------------------------------- KV cache


def kv_scenario(settings) -> Scenario:
    """Long prompts, a few at a time, with enough output that the load lasts many KV samples."""
    output = 256
    limits = engine_limits.for_settings(settings)
    longest = None if isinstance(limits, str) else limits.longest_prompt(output)
    return Scenario("kv-usage", input_tokens=min(4096, longest or 4096), output_tokens=output, num_prompts=8,
                    concurrency=4, endpoint="completions", warmup=0)


def _settle(read: Callable[[], dict[str, kv_usage.KvReading]], idle: dict[str, float]) -> dict[str, float]:
    """Wait for every worker's usage to fall back to its level before the load; what is still above it."""
    deadline = time.monotonic() + KV_IDLE_TIMEOUT
    while True:
        above = {name: r.usage for name, r in read().items() if r.usage is not None and r.usage > idle[name]}
        if not above or time.monotonic() > deadline:
            return above
        time.sleep(0.1)


def test_kv_cache_usage_stays_in_range(deployment, launched_services, llama4_settings, llama4_engine,
                                       tokenizer_dir, record_testsuite_property):
    workers = [r for r in launched_services if r.role in WORKER_ROLES and r.metrics_url]
    configs = deployment.run_dir / "engine_configs"
    configured = {w.name: kv_usage.configured_blocks(configs / f"{w.name}.json") for w in workers}
    offsets = {w.name: Path(w.log).stat().st_size for w in workers}

    def read() -> dict[str, kv_usage.KvReading]:
        return {w.name: kv_usage.read_worker(w.metrics_url) for w in workers}

    scenario = kv_scenario(llama4_settings)
    result, samples = host_memory.sample_during(
        lambda: run_load(deployment.base_url, deployment.served_model, scenario, tokenizer_path=tokenizer_dir),
        read, KV_INTERVAL)
    idle = {name: reading.usage or 0.0 for name, reading in samples[0].items()}
    left = _settle(read, idle)
    traces = {w.name: kv_usage.trace_lines(Path(w.log), offsets[w.name]) for w in workers}
    rows = [kv_usage.summarize(w.name, [s[w.name] for s in samples], traces[w.name], configured[w.name])
            for w in workers]
    for row in rows:
        if row.peak is not None:
            record_testsuite_property(f"memory.{row.worker}.kv_usage_peak", f"{row.peak:.6g}")
    if not llama4_engine.publishes_kv_usage and not any(row.values for row in rows):
        pytest.skip(f"no worker of --engine={llama4_settings.engine} exposes {' or '.join(kv_usage.USAGE_GAUGES)}")
    assert all(r.ok for r in result.records), "the KV load's requests failed: " + next(
        r.error for r in result.records if not r.ok)
    problems = kv_usage.problems(rows, kv_usage.frontend_total_blocks(deployment.base_url, deployment.served_model))
    problems += [f"{name}: KV usage still {value:.4f} {KV_IDLE_TIMEOUT:g}s after the load (blocks not released)"
                 for name, value in left.items()]
    assert not problems, "KV-cache usage out of range:\n  " + "\n  ".join(problems) + "\n" + kv_usage.table(rows)
    unread = [row.worker for row in rows if not row.values]
    if unread:  # a prefill mocker publishes no engine gauges in Dynamo 1.4.2
        record_testsuite_property("memory.kv_usage_unread", ",".join(unread))
