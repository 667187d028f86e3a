"""A real inference engine in CI: vLLM's CPU build (.venv-vllm, made by scripts/setup --tests) launched by the
plugin, serving the fixture model with random weights and n-gram speculative decoding. The suites pass on it with
acceptance measured from its own counters; without speculation the speculative suite fails, saying why; and the
same server tested as a bare --endpoint passes with no other option, detected as vLLM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from pytest_llama4.deploy import readiness

from .conftest import require
from .test_integration import assert_nothing_left, check_junit, group_alive, not_passed, properties, run_ids
from .test_slurm import allocation, inner_env, require_slurm, run_inner, steps_of  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SUITES = [str(ROOT / "suites" / f"test_{name}.py")
          for name in ("schema", "streaming", "errors", "speculative", "memory", "throughput")]
# What a healthy CPU vLLM skips, and why: no GPU here, no golden file for a random model, and no second test of the
# mocker's simulated speed-up.
EXPECTED_SKIPS = {
    "test_peak_gpu_memory_stays_under_the_limit": "no GPU telemetry",
    "test_greedy_outputs_match_the_golden_file": "no golden file",
    "test_mocker_decode_speedup_shows_in_itl": "the vllm drafts real tokens",
    "test_prompts_filling_max_num_tokens_complete": "sets no max_num_tokens",
}


@pytest.fixture
def vllm_python() -> Path:
    require(None if VLLM_PYTHON.exists() else f"{VLLM_PYTHON} is missing: ./scripts/setup --tests creates it",
            "the vLLM tests")
    return VLLM_PYTHON


def stop_kept(groups: list[int]) -> None:
    """Stop a --keep-deployment server as its message says (SIGTERM to the group), SIGKILL only if that fails:
    a SIGKILLed vLLM leaves its shared-memory segments (hundreds of MB) in /dev/shm."""
    for group in groups:
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while any(group_alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.5)
    for group in filter(group_alive, groups):
        os.killpg(group, signal.SIGKILL)


def run(pytester, reports: Path, *args: str):
    return pytester.runpytest_subprocess(*args, f"--reports-dir={reports}", "-p", "no:cacheprovider", "-p",
                                         "no:randomly", "-rs", timeout=600)


def test_the_suites_pass_on_a_launched_vllm_and_on_it_as_a_bare_endpoint(pytester, tmp_path, vllm_python):
    first = tmp_path / "launched"
    result = run(pytester, first, *SUITES, "--engine=vllm", f"--engine-python={vllm_python}", "--keep-deployment")
    out = result.stdout.str()
    pids = [int(p) for p in re.findall(r"kill -TERM -- -(\d+)", out)]
    try:
        assert result.ret == 0, out[-4000:]
        (run_id,) = run_ids(first)
        report = first / run_id
        skips, waived = not_passed(report / "junit.xml")
        assert waived == {}, "no waiver names vLLM"
        skips = {re.sub(r"\[.*", "", name): why for name, why in skips.items()}
        assert set(skips) == set(EXPECTED_SKIPS), skips
        assert all(EXPECTED_SKIPS[name] in message for name, message in skips.items()), skips
        props = properties(check_junit(report / "junit.xml"))
        assert float(props["speculative.acceptance_length"]) >= 1.5, "measured from vllm:spec_decode_* counters"
        perf = json.loads((report / "perf.json").read_text())
        assert [s["name"] for s in perf["scenarios"]] == ["chat-isl128-osl32-c4"]
        assert "speculative.acceptance_length" in (report / "summary.html").read_text()
        url = re.search(r"at (http://\S+),", out).group(1)
        bare = run(pytester, tmp_path / "endpoint", *SUITES[:3], f"--endpoint={url}", f"--served-model-name={MODEL}")
        assert bare.ret == 0, bare.stdout.str()[-4000:]
        bare.stdout.fnmatch_lines(["deployment: unknown existing endpoint at *",
                                   "detected: vLLM 0.31.0 (/v1/models owned_by 'vllm', /version); --engine=vllm's "
                                   "known deviations apply"])
        assert "skipped" not in bare.parseoutcomes(), bare.stdout.str()[-2000:]
        # acceptance read from the endpoint itself (vLLM's cumulative counters at /metrics), as on a cluster whose
        # server we did not launch
        drafting = run(pytester, tmp_path / "drafting", SUITES[3], "-k", "acceptance", f"--endpoint={url}",
                       "--engine=vllm", f"--served-model-name={MODEL}", "--profile=cpu-vllm",
                       f"--engine-config={ROOT / 'engine_configs' / 'vllm' / 'cpu_ngram.yaml'}")
        drafting.assert_outcomes(passed=1)
        # trtllm-serve's disaggregated proxy has no /v1/models: its readiness is /health (an empty 200, as vLLM's)
        # and a one-token probe, the same code path, run here against a real server
        probe = readiness.check_once(requests.Session(), url, None, MODEL, {}, 30, lists_models=False)
        assert probe.ready, probe.missing
    finally:
        stop_kept(pids)
    assert_nothing_left(first)


def test_without_speculation_the_acceptance_test_fails_saying_so(pytester, tmp_path, vllm_python):
    """Speculation off must be a failure whichever way it shows: a config without a drafter, and a server whose
    drafter is off while the config given for it claims n-gram drafting (it publishes no drafting counters)."""
    reports = tmp_path / "reports"
    result = run(pytester, reports, SUITES[3], "-k", "acceptance", "--engine=vllm", "--keep-deployment",
                 f"--engine-python={vllm_python}",
                 f"--engine-config={ROOT / 'engine_configs' / 'vllm' / 'cpu_no_speculation.yaml'}")
    out = result.stdout.str()
    pids = [int(p) for p in re.findall(r"kill -TERM -- -(\d+)", out)]
    try:
        assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
        result.stdout.fnmatch_lines(["*cpu_no_speculation.yaml has no speculative_config.max_draft_len (vLLM: "
                                     "speculative-config.num_speculative_tokens): this deployment does not decode "
                                     "speculatively*"])
        url = re.search(r"at (http://\S+),", out).group(1)
        claimed = run(pytester, tmp_path / "endpoint", SUITES[3], "-k", "acceptance", f"--endpoint={url}",
                      "--engine=vllm", f"--served-model-name={MODEL}", "--profile=cpu-vllm",
                      f"--engine-config={ROOT / 'engine_configs' / 'vllm' / 'cpu_ngram.yaml'}")
        assert claimed.ret == pytest.ExitCode.TESTS_FAILED, claimed.stdout.str()[-3000:]
        claimed.stdout.fnmatch_lines(["*no speculative-decoding counters (*vllm:spec_decode*"])
    finally:
        stop_kept(pids)
    assert pids, "--keep-deployment printed no process group to stop"
    assert_nothing_left(reports)


@pytest.mark.slurm
def test_vllm_serves_the_suites_from_a_slurm_step(tmp_path, request, vllm_python):
    """The same launch path on a real SLURM cluster: the server is a step on the allocation's node, bound to that
    node's own address, and nothing is left in squeue afterwards."""
    require_slurm()
    slurm_env = request.getfixturevalue("allocation")(1)
    result = run_inner(tmp_path, inner_env(slurm_env), *SUITES[:4], "--engine=vllm", f"--engine-python={vllm_python}",
                       "--startup-timeout=280")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (run_id,) = run_ids(tmp_path)
    header = (tmp_path / run_id / "logs" / "worker-0.log").read_text().splitlines()[0]
    node = socket.gethostbyname("gpu-a01")
    assert f"srun --overlap --jobid={slurm_env['SLURM_JOB_ID']} " in header and "--nodelist=gpu-a01 " in header
    assert f"--host {node} " in header and node != "127.0.0.1", header[:400]
    props = properties(check_junit(tmp_path / run_id / "junit.xml"))
    assert float(props["speculative.acceptance_length"]) >= 1.5
    assert steps_of(slurm_env["SLURM_JOB_ID"]) == [], "steps left in squeue -s"
    assert_nothing_left(tmp_path)
