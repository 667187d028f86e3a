"""The SLURM launcher on a real SLURM cluster (scripts/slurm-local: 2 nodes on this machine)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llama4.deploy import services

from .conftest import require
from .test_integration import (
    SUITES,
    as_at_a_terminal,
    assert_nothing_left,
    check_junit,
    processes_of_run,
    properties,
    run_ids,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def slurm_available() -> str | None:
    """Why SLURM cannot run here, or None when it can."""
    if not shutil.which("sinfo"):
        return "SLURM client tools are not installed (run scripts/slurm-local up as root)"
    if subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10, check=False).returncode != 0:
        return "no SLURM controller answers (run scripts/slurm-local up as root)"
    return None


def require_slurm() -> None:
    """Skip where no SLURM controller answers; in CI that is a failure, never a silent skip."""
    require(slurm_available(), "SLURM tests")


@pytest.fixture(scope="session", autouse=True)
def _require_slurm():
    require_slurm()


@pytest.fixture
def allocation():
    """A real allocation that outlives each inner pytest run, so its steps can be inspected afterwards."""
    def grab(nodes: int) -> dict[str, str]:
        out = subprocess.run(["salloc", "--no-shell", f"-N{nodes}", "--job-name=llama4-tests"], capture_output=True,
                             text=True, timeout=60, check=True).stderr
        job = re.search(r"Granted job allocation (\d+)", out).group(1)
        jobs.append(job)
        nodelist = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        return {"SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": nodelist}

    jobs: list[str] = []
    yield grab
    for job in jobs:
        subprocess.run(["scancel", job], check=False)


def steps_of(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.split(".")[-1].startswith(("extern", "batch"))]


def inner_env(slurm_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, **slurm_env}


def run_inner(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--reports-dir={tmp_path}",
                           "--launcher=slurm", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def start_held_deployment(tmp_path: Path, slurm_env: dict[str, str], *args: str) -> subprocess.Popen:
    """An inner pytest whose only test holds the deployment up; returns once every step runs."""
    started = tmp_path / "up"
    (tmp_path / "test_wait.py").write_text(
        f"import pathlib, time\n\ndef test_wait(deployment):\n"
        f"    pathlib.Path({str(started)!r}).write_text('up')\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--reports-dir={tmp_path}",
                             "--launcher=slurm", *args, "test_wait.py"], cwd=tmp_path, env=inner_env(slurm_env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=as_at_a_terminal)
    deadline = time.monotonic() + 90
    while not started.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the deployment never came up: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize(("topology", "discovery"),
                         [("agg", "file"), ("agg", "etcd"), ("disagg", "file"), ("disagg", "etcd")])
def test_suites_pass_on_slurm_steps(tmp_path, allocation, topology, discovery):
    slurm_env = allocation(2)
    result = run_inner(tmp_path, inner_env(slurm_env), str(SUITES), f"--topology={topology}",
                       f"--discovery={discovery}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (run_id,) = run_ids(tmp_path)
    props = properties(check_junit(tmp_path / run_id / "junit.xml"))
    assert props["launcher"] == "slurm" and props["topology"] == topology
    logs = tmp_path / run_id / "logs"
    expected = {"frontend-0": "gpu-a01", "worker-0": "gpu-a01"} if topology == "agg" else \
        {"frontend-0": "gpu-a01", "prefill-0": "gpu-a01", "decode-0": "gpu-a02"}
    if discovery == "etcd":
        expected |= {"etcd-0": "gpu-a01", "nats-0": "gpu-a01"}
    for service, node in expected.items():
        header = (logs / f"{service}.log").read_text().splitlines()[0]
        assert f"srun --overlap --jobid={slurm_env['SLURM_JOB_ID']} " in header
        assert f"--nodelist={node} " in header, f"{service} did not run on {node}: {header[:300]}"
    # each node is reached at its own resolved address (scripts/slurm-local: never 127.0.0.1), recorded per service
    records = {r.name: r for r in services.read(tmp_path / run_id)}
    for service, node in expected.items():
        assert records[service].address == socket.gethostbyname(node) != "127.0.0.1", records[service]
    head = socket.gethostbyname("gpu-a01")
    bound = {"frontend-0": f"--http-host {head} ", "etcd-0": f"--listen-client-urls http://{head}:",
             "nats-0": f"--addr {head} "}
    for service, flag in bound.items():
        if service in expected:
            assert flag in (logs / f"{service}.log").read_text().splitlines()[0], f"{service} not bound to {head}"
    assert steps_of(slurm_env["SLURM_JOB_ID"]) == [], "steps left in squeue -s"
    assert_nothing_left(tmp_path)


def test_ctrl_c_cancels_every_step(tmp_path, allocation):
    slurm_env = allocation(2)
    proc = start_held_deployment(tmp_path, slurm_env, "--topology=disagg")
    try:
        assert len(steps_of(slurm_env["SLURM_JOB_ID"])) == 3, "frontend, prefill and decode steps should run"
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=90)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert steps_of(slurm_env["SLURM_JOB_ID"]) == [], "steps left in squeue -s after Ctrl-C"
    assert_nothing_left(tmp_path)


def test_disagg_on_a_one_node_allocation_is_a_usage_error(tmp_path, allocation):
    result = run_inner(tmp_path, inner_env(allocation(1)), "--topology=disagg", str(SUITES))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--topology=disagg needs 2 node(s) from NUM_PREFILL_NODES" in result.stderr
    assert "has 1: run pytest inside `salloc -N2`" in result.stderr and "Traceback" not in result.stderr


def test_outside_an_allocation_is_a_usage_error(tmp_path):
    result = run_inner(tmp_path, inner_env({}), str(SUITES))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "SLURM_JOB_ID is not set: run pytest inside `salloc -N1 ...`, or pass --slurm-alloc" in result.stderr


def test_slurm_alloc_requests_and_releases_an_allocation(tmp_path):
    (tmp_path / "test_up.py").write_text("def test_up(deployment):\n    assert deployment.plan.num_nodes == 2\n")
    result = run_inner(tmp_path, inner_env({}), "--slurm-alloc", "--topology=disagg", "test_up.py")
    assert result.returncode == 0, result.stdout[-3000:]
    (run_id,) = run_ids(tmp_path)
    left = subprocess.run(["squeue", "-h", "-n", f"pytest-llama4-{run_id}"], capture_output=True, text=True).stdout
    assert left.strip() == "", f"the requested allocation was not released: {left}"
    assert_nothing_left(tmp_path)


def test_sigkilled_pytest_leaves_no_step(tmp_path, allocation):
    """No teardown code runs: srun dies with pytest (parent-death signal) and SLURM ends the step it ran."""
    slurm_env = allocation(2)
    proc = start_held_deployment(tmp_path, slurm_env)
    try:
        assert len(steps_of(slurm_env["SLURM_JOB_ID"])) == 2
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    deadline = time.monotonic() + 60
    while steps_of(slurm_env["SLURM_JOB_ID"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert steps_of(slurm_env["SLURM_JOB_ID"]) == [], "steps outlived a SIGKILLed pytest"
    deadline = time.monotonic() + 30
    while any(processes_of_run(r) for r in run_ids(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert_nothing_left(tmp_path, killed=True)
