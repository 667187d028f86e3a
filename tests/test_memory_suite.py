"""The memory suite: its building blocks (OOM signatures, /proc scanning, limits, engine token limits, KV figures)
and, on the real embedded default, a pass for agg and disagg and the right failure for a worker that logs an
out-of-memory line and for a host RSS limit that is too small."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from pytest_llama4.config.paths import PROJECT_ROOT
from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy import engine_limits, procscan
from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.local import RUN_LABEL_ENV, SERVICE_LABEL_ENV, LocalLauncher
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher
from pytest_llama4.measure import host_memory, kv_usage, oom
from pytest_llama4.measure.profiles import PROFILES_DIR
from pytest_llama4.plugin.session import Run

from .test_integration import SUITES, assert_nothing_left, check_junit, properties, run_ids, run_pytest
from .test_slurm import allocation as slurm_allocation  # noqa: F401 (a fixture, under this name here)
from .test_slurm import inner_env, require_slurm, run_inner, steps_of

MEMORY_SUITE = str(SUITES / "test_memory.py")
FAST = "--speedup-ratio=20"  # the mocker's simulated timing 4x faster than the default: the suite's checks
# do not depend on speed, and the KV sampler (every 50 ms) still sees the usage rise at this ratio
EAGLE = PROJECT_ROOT / "engine_configs" / "llama4" / "eagle"

# ---------------------------------------------------------------------------------------------------- OOM lines

REAL_OOM_LINES = {
    "torch-cuda-oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                      "capacity of 79.11 GiB of which 1.06 GiB is free.",
    "torch-oom-exception": "torch.cuda.OutOfMemoryError: Allocation on device 0 would exceed allowed memory.",
    "cuda-error-oom": "RuntimeError: CUDA error: out of memory",
    "trtllm-cuda-runtime-oom": "[TensorRT-LLM][ERROR] CUDA runtime error in cudaMallocAsync(ptr, n, stream): out of "
                               "memory (/src/cpp/tensorrt_llm/runtime/tllmBuffers.h:125)",
    "cuda-enum-oom": "cuda.bindings.runtime.cudaError_t.cudaErrorMemoryAllocation",
    "nccl-cuda-oom": "node1:812:812 [0] include/alloc.h:103 NCCL WARN Cuda failure 2 'out of memory'",
    "cublas-alloc-failed": "[TensorRT-LLM][ERROR] CUBLAS_STATUS_ALLOC_FAILED",
    "trtllm-kv-no-free-blocks": "RuntimeError: [TensorRT-LLM][ERROR] Assertion failed: Can't allocate new blocks for "
                                "window size 8448. No free blocks left. (kvCacheManager.cpp:1508)",
    "trtllm-kv-no-sequence-fits": "AssertionError: Impossible to fit in any sequence in kvCache",
    "trtllm-kv-pool-too-small": "[TensorRT-LLM][ERROR] maxTokensInPagedKvCache (1024) must be large enough to process "
                                "at least 1 sequence to completion",
    "slurm-oom-kill": "slurmstepd: error: Detected 1 oom_kill event in StepId=108.3. Some of the step tasks have "
                      "been OOM Killed.",
    "srun-task-oom": "srun: error: node2: task 0: Out Of Memory",
    "python-memoryerror": "MemoryError",
}
HARMLESS_LINES = [
    "max_num_tokens: 1024  # When max_num_tokens set to higher values, can cause OOM issues.",
    "kv_cache_config: {free_gpu_memory_fraction: 0.5}  # of free memory",
    "INFO request 42: prompt 'the boy ran out of memory lane'",
    "\x1b[32m INFO\x1b[0m dynamo_llm::mocker: Creating mocker engine: MockEngineArgs { num_gpu_blocks: 16384 }",
    "WARNING: NoMemoryErrorHandler installed",
]


@pytest.mark.parametrize("name", sorted(REAL_OOM_LINES))
def test_each_signature_matches_its_real_message(name):
    signature = oom.match(REAL_OOM_LINES[name])
    assert signature is not None and signature.name == name


@pytest.mark.parametrize("line", HARMLESS_LINES)
def test_ordinary_lines_are_no_oom(line):
    assert oom.match(line) is None


def test_scan_reports_file_line_and_text_without_colours(tmp_path):
    log = tmp_path / "worker-0.log"
    log.write_text("# command line\nstarting\n\x1b[31mERROR\x1b[0m CUDA error: out of memory\nbye\n")
    (hit,) = oom.scan([log, tmp_path / "missing.log"])
    assert (hit.path, hit.line_number, hit.line) == (log, 3, "ERROR CUDA error: out of memory")
    assert oom.report([hit]) == f"{log}:3: ERROR CUDA error: out of memory  [cuda-error-oom]"


# ---------------------------------------------------------------------------------------------------- /proc


@pytest.fixture
def labelled_sleeper():
    """A child process labelled like a launched service, in its own process group."""
    started: list[subprocess.Popen] = []

    def start(run_id: str, service: str, **extra: str) -> subprocess.Popen:
        env = {**os.environ, RUN_LABEL_ENV: run_id, SERVICE_LABEL_ENV: service, **extra}
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                                   start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_scanner_finds_a_run_s_processes_by_label_and_node(labelled_sleeper):
    ours = labelled_sleeper("unit-run", "worker-0")
    on_node2 = labelled_sleeper("unit-run", "decode-0", SLURMD_NODENAME="node2")
    labelled_sleeper("unit-run-private", "worker-0")  # another run's label, a prefix of ours
    time.sleep(0.3)
    found = {pid: (service, rss) for pid, service, rss in procscan.Scanner("unit-run").scan()}
    assert set(found) == {ours.pid, on_node2.pid}
    assert found[ours.pid][0] == "worker-0" and found[ours.pid][1] > 1024 * 1024
    assert [p[0] for p in procscan.Scanner("unit-run", node="node2").scan()] == [on_node2.pid]


def test_scanner_leaves_out_processes_that_ended(labelled_sleeper):
    process = labelled_sleeper("unit-run-2", "worker-0")
    scanner = procscan.Scanner("unit-run-2")
    time.sleep(0.3)
    assert [p[0] for p in scanner.scan()] == [process.pid]
    os.kill(process.pid, signal.SIGKILL)
    time.sleep(0.3)  # not reaped yet: a zombie
    assert scanner.scan() == []


def test_local_source_sums_per_service_and_drops_helpers(labelled_sleeper):
    labelled_sleeper("unit-run-3", "worker-0")
    labelled_sleeper("unit-run-3", "worker-0")
    labelled_sleeper("unit-run-3", "host-memory-99")
    time.sleep(0.3)
    (usage,) = host_memory.LocalProcesses("unit-run-3", frozenset({"worker-0", "frontend-0"})).read()
    assert (usage.service, usage.node, len(usage.pids)) == ("worker-0", host_memory.LOCAL_NODE, 2)


def test_the_endpoint_launcher_has_no_services_to_measure(tmp_path):
    run = Run(Settings(launcher="endpoint", endpoint="http://127.0.0.1:9"), "some-run")
    assert run.node_runner() is None
    assert host_memory.process_source(None, tmp_path / "some-run", frozenset()) == host_memory.NO_SERVICES_OF_OURS


def test_each_launcher_gets_its_source(tmp_path):
    local = host_memory.process_source(LocalLauncher("r1"), tmp_path / "r1", frozenset({"worker-0"}))
    assert isinstance(local, host_memory.LocalProcesses) and local.run_id == "r1"
    runner = SlurmLauncher(Allocation("77", ("node1", "node2")), "r1")
    slurm = host_memory.process_source(runner, tmp_path / "r1", frozenset({"worker-0"}))
    assert isinstance(slurm, host_memory.SlurmProcesses) and slurm.runner is runner
    assert slurm.nodes == ("node1", "node2"), "no services.json yet: every node of the allocation"


def test_the_slurm_sampler_runs_procscan_as_a_step_on_each_node(monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 99)
    runner = SlurmLauncher(Allocation("77", ("node1", "node2")), "r1")
    source = host_memory.SlurmProcesses(runner, "r1", frozenset({"worker-0"}), ("node2",))
    assert source.step_name("node2") == "host-memory-99-node2"
    argv = runner.helper_argv(source.command("node2"), ("node2",), name=source.step_name("node2"), unbuffered=True)
    assert argv[:3] == ["srun", "--unbuffered", "--overlap"] and "--jobid=77" in argv and "--nodelist=node2" in argv
    assert "--job-name=llama4-r1-host-memory-99-node2" in argv
    assert argv[-6:-4] == ["python3", "-c"] and argv[-3:] == ["r1", "node2", "0.5"]
    assert "class Scanner" in argv[-4]


def test_limits_by_role_and_the_table():
    limits = {"frontend": 100, "default": 50}
    peaks = host_memory.peaks([
        [host_memory.ServiceMemory("frontend-0", "node1", 80 * host_memory.MIB, (1,))],
        [host_memory.ServiceMemory("frontend-0", "node1", 120 * host_memory.MIB, (1,)),
         host_memory.ServiceMemory("decode-0", "node2", 10 * host_memory.MIB, (2, 3))]])
    rows = host_memory.rows(peaks, limits)
    assert [(r.service, r.peak_mib, r.limit_mib, r.ok) for r in rows] == [
        ("decode-0", 10.0, 50.0, True), ("frontend-0", 120.0, 100.0, False)]
    assert host_memory.table(rows).splitlines() == [
        "service        node           peak MiB  limit MiB  verdict",
        "decode-0       node2              10.0         50  ok",
        "frontend-0     node1             120.0        100  OVER"]


def test_sample_during_reads_before_during_and_after():
    ticks = iter(range(100))
    result, samples = host_memory.sample_during(lambda: time.sleep(0.35) or "done", lambda: next(ticks), 0.1)
    assert result == "done" and samples[0] == 0 and len(samples) >= 4 and samples == sorted(samples)


# ---------------------------------------------------------------------------------------------------- token limits


def test_seed_agg_config_stresses_its_max_num_tokens_only():
    limits = engine_limits.for_settings(Settings(engine="dynamo-trtllm", engine_config=EAGLE / "eagle_agg.yaml"))
    assert (limits.max_num_tokens, limits.max_seq_len, limits.chunked_prefill) == (1024, 8448, False)
    # 8448 itself does not fit: no chunked prefill, so a prompt must fit one 1024-token iteration
    assert engine_limits.stress_cases(limits, 16) == [("max_num_tokens-1024-prompt-1024", 1024)]


def test_seed_disagg_configs_stress_the_prefill_budget_within_the_shorter_sequence_limit():
    limits = engine_limits.for_settings(Settings(
        engine="dynamo-trtllm", topology="disagg", prefill_engine_config=EAGLE / "eagle_prefill.yaml",
        decode_engine_config=EAGLE / "eagle_decode.yaml"))
    assert (limits.max_num_tokens, limits.max_seq_len) == (8192, 8192)
    assert engine_limits.stress_cases(limits, 16) == [("max_num_tokens-8192-prompt-8176", 8176)]


def test_a_config_that_admits_the_seed_length_gets_the_8448_case():
    limits = engine_limits.TokenLimits(16384, 32768, True, "x.yaml")
    assert engine_limits.stress_cases(limits, 16) == [("max_num_tokens-16384-prompt-16384", 16384),
                                                      ("seed-8448", 8448)]
    the_seed_value = engine_limits.TokenLimits(8448, 16384, False, "x.yaml")
    assert engine_limits.stress_cases(the_seed_value, 16) == [("max_num_tokens-8448-prompt-8448", 8448)]


def test_mocker_limits_come_from_its_json_and_the_model_length():
    limits = engine_limits.for_settings(Settings())
    assert (limits.max_num_tokens, limits.max_seq_len, limits.chunked_prefill) == (8192, 8192, True)
    assert engine_limits.stress_cases(limits, 16) == [("max_num_tokens-8192-prompt-8176", 8176)]


def test_unknown_configs_are_a_reason_not_a_guess():
    reason = engine_limits.for_settings(Settings(engine="trtllm-serve", launcher="endpoint", endpoint="http://h"))
    assert isinstance(reason, str) and "no engine config for worker" in reason


# ---------------------------------------------------------------------------------------------------- KV figures


def test_kv_figures_from_metrics_text_and_trace_lines(tmp_path, monkeypatch):
    text = ('# HELP vllm:kv_cache_usage_perc KV-cache usage\nvllm:kv_cache_usage_perc{engine="0",model_name="m a"} '
            '0.25\nvllm:kv_cache_usage_perc{engine="1",model_name="m a"} 0.5\ndynamo_component_total_blocks'
            '{dp_rank="0"} 100\n')
    assert kv_usage._maxima(text) == {"vllm:kv_cache_usage_perc": 0.5, "dynamo_component_total_blocks": 100.0}
    log = tmp_path / "prefill-0.log"
    log.write_text("before\n\x1b[2m2026\x1b[0m INFO dynamo_mocker::common::kv_cache_trace: KV cache trace "
                   "\x1b[3mengine_type\x1b[0m=\"vllm\" \x1b[3mfree_blocks\x1b[0m=16375 \x1b[3mactive_blocks\x1b[0m=9 "
                   "\x1b[3minactive_blocks\x1b[0m=0 \x1b[3mtotal_blocks\x1b[0m=16384 "
                   "\x1b[3mutilization\x1b[0m=0.00054931640625\n")
    assert kv_usage.trace_lines(log) == [kv_usage.TraceLine(9, 16384, 0.00054931640625)]
    assert kv_usage.trace_lines(log, offset=log.stat().st_size) == []
    (tmp_path / "w.json").write_text('{"num_gpu_blocks": 16384}')
    assert kv_usage.configured_blocks(tmp_path / "w.json") == 16384


def test_kv_problems_name_what_is_out_of_range():
    gauge = "vllm:kv_cache_usage_perc"
    fine = kv_usage.summarize("decode-0", [kv_usage.KvReading(0.0, None, gauge), kv_usage.KvReading(0.02, None, gauge)],
                              [], 16384)
    unread = kv_usage.summarize("prefill-0", [kv_usage.KvReading(None, None, None)], [], 16384)
    assert kv_usage.problems([fine, unread], 16384.0) == []
    assert (fine.source, fine.peak, unread.source, unread.values) == (gauge, 0.02, "none", ())
    flat = kv_usage.summarize("worker-0", [kv_usage.KvReading(0.0, None, gauge)] * 3, [], 16384)
    wild = kv_usage.summarize("decode-0", [], [kv_usage.TraceLine(9, 1000, 1.5)], 16384)
    assert kv_usage.problems([flat, wild], 8192.0) == [
        "worker-0: KV usage never rose above 0 under load: the figure does not move",
        "decode-0: KV usage outside [0, 1]: 1.5 .. 1.5",
        "decode-0: total blocks [1000] != configured num_gpu_blocks 16384",
        f"the frontend's {kv_usage.FRONTEND_TOTAL_BLOCKS} is 8192.0, the workers are configured with [16384]"]
    assert kv_usage.problems([unread], None)[-1].startswith("no worker exposes a KV usage figure")
    assert kv_usage.table([wild]).splitlines()[1].split() == ["decode-0", "trace", "1", "1.5000", "1.5000", "[1000]",
                                                             "/", "16384"]


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.mark.integration
@pytest.mark.parametrize("topology", ["agg", "disagg"])
def test_memory_suite_passes_on_the_embedded_default(pytester, tmp_path, topology):
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, MEMORY_SUITE, f"--topology={topology}", FAST, "-rs")
    assert result.ret == 0, result.stdout.str()[-4000:]
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["*test_memory.py*: no GPU telemetry on launcher=local: NVML *"])
    (run_id,) = run_ids(reports)
    props = properties(check_junit(reports / run_id / "junit.xml"))
    assert props["memory.heaviest_scenario"] == "chat-isl256-osl64-c8"
    services = ["frontend-0", "worker-0"] if topology == "agg" else ["frontend-0", "prefill-0", "decode-0"]
    for service in services:
        assert 20 < float(props[f"memory.{service}.local.peak_rss_mib"]) < 512
    kv_read = "worker-0" if topology == "agg" else "decode-0"
    assert 0 < float(props[f"memory.{kv_read}.kv_usage_peak"]) <= 1
    assert props.get("memory.kv_usage_unread") == (None if topology == "agg" else "prefill-0")
    assert_nothing_left(reports)


OOM_LINE = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "79.11 GiB of which 1.06 GiB is free.")


@pytest.mark.integration
def test_a_worker_that_logs_an_oom_line_fails_the_oom_checks_with_file_and_line(pytester, tmp_path, monkeypatch):
    # sitecustomize runs in every Python process on PYTHONPATH, before its main module: only the mocker prints.
    # sys.argv is still ['-m', ...] then; sys.orig_argv holds the module name.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nif 'dynamo.mocker' in sys.orig_argv:\n"
        f"    print({OOM_LINE!r}, file=sys.stderr, flush=True)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, MEMORY_SUITE, FAST)
    result.assert_outcomes(failed=2, passed=3, skipped=1)
    (run_id,) = run_ids(reports)
    log = reports / run_id / "logs" / "worker-0.log"
    assert log.read_text().splitlines()[1] == OOM_LINE  # line 1 is the command line the launcher wrote
    result.stdout.fnmatch_lines([
        "*FAILED*test_memory.py::test_no_worker_logged_out_of_memory*",
        "*FAILED*test_memory.py::test_prompts_filling_max_num_tokens_complete*"], consecutive=False)
    out = result.stdout.str()
    assert "out-of-memory lines in worker logs after chat-isl256-osl64-c8:" in out
    assert "out-of-memory lines in worker logs after 4 prompts of 8176 tokens:" in out
    assert f"{log}:2: {OOM_LINE}  [torch-cuda-oom]" in out
    assert_nothing_left(reports)


@pytest.mark.integration
def test_a_host_rss_limit_too_small_fails_with_the_table(pytester, tmp_path):
    profile = yaml.safe_load((PROFILES_DIR / "cpu-mocker.yaml").read_text())
    profile["memory"]["host_rss_mib"] = {"frontend": 1, "default": 4096}
    path = tmp_path / "tiny-rss.yaml"
    path.write_text(yaml.safe_dump(profile))
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, MEMORY_SUITE, f"--profile-file={path}", "-k", "host_rss", FAST)
    result.assert_outcomes(failed=1, deselected=5)
    result.stdout.fnmatch_lines([
        "*host RSS over the profile's memory.host_rss_mib during chat-isl256-osl64-c8 (* readings, every 0.5s):",
        "*service        node           peak MiB  limit MiB  verdict",
        "*frontend-0     local     * 1  OVER",
        "*worker-0       local     * 4096  ok"])
    assert_nothing_left(reports)


@pytest.mark.integration
@pytest.mark.slurm
def test_host_rss_is_read_on_each_node_through_srun(tmp_path, request):
    require_slurm()
    slurm_env = request.getfixturevalue("slurm_allocation")(2)  # tests/test_slurm.py's, released after
    result = run_inner(tmp_path, inner_env(slurm_env), MEMORY_SUITE, "--topology=disagg", "--discovery=etcd",
                       "-k", "host_rss or survived", FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (run_id,) = run_ids(tmp_path)
    props = properties(check_junit(tmp_path / run_id / "junit.xml"))
    placed = {"frontend-0": "gpu-a01", "etcd-0": "gpu-a01", "nats-0": "gpu-a01", "prefill-0": "gpu-a01",
              "decode-0": "gpu-a02"}
    measured = {key.split(".")[1]: key.split(".")[2] for key in props if key.endswith(".peak_rss_mib")}
    assert measured == placed, "each service measured once, on the node SLURM ran it on"
    assert steps_of(slurm_env["SLURM_JOB_ID"]) == [], "the sampler's steps were left in squeue -s"
    assert_nothing_left(tmp_path)


# KV blocks that are never released, from outside the worker: once the KV test's load starts (after the idle
# reading), a stray client keeps a long ignore_eos generation in flight until the test is over, so the worker's
# usage cannot fall back to idle.
HELD_KV_CONFTEST = textwrap.dedent("""
    import threading
    import pytest
    import requests

    def hold(deployment, stop, delay):
        body = {"model": deployment.served_model, "prompt": "hold " * 64, "max_tokens": 7900, "ignore_eos": True,
                "stream": True}
        stop.wait(delay)
        while not stop.is_set():
            with requests.post(f"{deployment.base_url}/v1/completions", json=body, stream=True, timeout=120) as r:
                for _ in r.iter_lines():
                    if stop.is_set():
                        break

    @pytest.fixture(autouse=True)
    def stray_client(request, deployment):
        if request.node.name != "test_kv_cache_usage_stays_in_range":
            yield
            return
        load, stop = request.module.run_load, threading.Event()
        # two clients, staggered: one request is always in flight, also while the other starts its next (each
        # lasts about 10 s)
        holders = [threading.Thread(target=hold, args=(deployment, stop, delay)) for delay in (0, 4)]

        def load_and_hold(*args, **kwargs):
            for holder in holders:
                holder.start()
            return load(*args, **kwargs)

        request.module.run_load = load_and_hold
        yield
        request.module.run_load = load
        stop.set()
        for holder in holders:
            holder.join(timeout=30)
""")


@pytest.mark.integration
def test_kv_usage_that_never_returns_to_idle_fails_the_kv_check(pytester, tmp_path):
    reports = tmp_path / "reports"
    pytester.makeconftest(HELD_KV_CONFTEST)
    (pytester.path / "test_memory.py").write_text((SUITES / "test_memory.py").read_text())
    result = run_pytest(pytester, reports, "test_memory.py", "-k", "kv_cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*KV-cache usage out of range:*",
                                 "*worker-0: KV usage still 0.0* 10s after the load (blocks not released)*"])
    assert_nothing_left(reports)
