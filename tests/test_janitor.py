"""What a dead run left on SLURM is found and cancelled; nothing else ever is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from pytest_llama4.deploy.launchers import janitor
from pytest_llama4.deploy.launchers.janitor import OUR_NAMES, RunRecord

from .test_integration import assert_nothing_left, run_ids
from .test_slurm import inner_env, require_slurm, start_held_deployment

HERE = socket.gethostname()


def test_a_run_is_dead_when_its_pytest_is_gone_here_or_silent_elsewhere():
    now = time.time()
    assert RunRecord("r", HERE, os.getpid(), now).dead(HERE, now) is None
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert RunRecord("r", HERE, gone.pid, now).dead(HERE, now) == f"its pytest (pid {gone.pid} on {HERE}) is gone"
    elsewhere = RunRecord("r", "login-2", 1, now - janitor.STALE_AFTER_S - 5)
    assert elsewhere.dead(HERE, now) == f"no heartbeat from login-2 for {janitor.STALE_AFTER_S + 5:.0f}s"
    assert RunRecord("r", "login-2", 1, now - 10).dead(HERE, now) is None  # a live run on another host


def test_only_names_carrying_a_run_id_are_ours():
    assert OUR_NAMES.match("pytest-llama4-20261201-051320-0524").group(1) == "20261201-051320-0524"
    assert OUR_NAMES.match("llama4-20261201-051320-0524-ratio-1-decode-0").group(1) == "20261201-051320-0524"
    assert not OUR_NAMES.match("llama4-tests") and not OUR_NAMES.match("my-pytest-llama4-20261201-051320-0524")


def test_the_heartbeat_keeps_the_record_fresh_and_removes_it_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(janitor, "HEARTBEAT_S", 0.05)
    with janitor.heartbeat("20261201-000000-aaaa", kept=False, directory=tmp_path) as record:
        first = RunRecord.read("20261201-000000-aaaa", tmp_path).heartbeat
        time.sleep(0.3)
        assert RunRecord.read("20261201-000000-aaaa", tmp_path).heartbeat > first
        assert record.pid == os.getpid() and record.host == HERE
    assert list(tmp_path.iterdir()) == []
    with janitor.heartbeat("20261201-000000-bbbb", kept=True, directory=tmp_path):
        pass
    assert RunRecord.read("20261201-000000-bbbb", tmp_path).kept, "a kept deployment's record stays"


def _job_named(name: str) -> str:
    return subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip()


def _reap(state, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_llama4.cli", "reap", *args], capture_output=True, text=True,
                          env={**os.environ, janitor.STATE_ENV: str(state)}, timeout=120)


@pytest.mark.integration
@pytest.mark.slurm
def test_reap_cancels_what_a_sigkilled_run_left_and_nothing_else(tmp_path, tmp_path_factory, monkeypatch):
    require_slurm()
    state = tmp_path_factory.mktemp("state")  # outside the reports directory
    foreign_name = "pytest-llama4-20990101-000000-beef"  # our naming, but no record of ours: someone else's
    subprocess.run(["salloc", "--no-shell", "-N1", "-n1", "--oversubscribe", f"--job-name={foreign_name}"],
                   capture_output=True, check=True, timeout=60)
    monkeypatch.setenv(janitor.STATE_ENV, str(state))  # the inner pytest inherits it through inner_env
    try:
        proc = start_held_deployment(tmp_path, {}, "--slurm-alloc")
        (run_id,) = run_ids(tmp_path)
        proc.kill()  # SIGKILL: no teardown runs; the requested allocation outlives pytest
        proc.wait(timeout=30)
        job = _job_named(f"pytest-llama4-{run_id}")
        assert job, "a SIGKILLed --slurm-alloc run leaves its allocation (what the janitor is for)"
        assert RunRecord.read(run_id, state / "runs") is not None
        listed = _reap(state, "--dry-run")
        assert f"would cancel job {job} (pytest-llama4-{run_id}) of run {run_id}: its pytest" in listed.stdout
        assert _job_named(f"pytest-llama4-{run_id}") == job, "--dry-run cancels nothing"
        done = _reap(state)
        assert done.returncode == 0, done.stderr
        assert f"cancelled job {job} (pytest-llama4-{run_id})" in done.stdout
        assert f"left alone: {_job_named(foreign_name)} ({foreign_name}): no record of run" in done.stdout
        deadline = time.monotonic() + 30
        while _job_named(f"pytest-llama4-{run_id}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _job_named(f"pytest-llama4-{run_id}") == "" and run_id not in _steps()
        assert _job_named(foreign_name), "a job that is not provably ours is never touched"
        assert not (state / "runs" / f"{run_id}.json").exists()
        assert_nothing_left(tmp_path, killed=True)
    finally:
        subprocess.run(["scancel", "-n", foreign_name], check=False)


def _steps() -> str:
    return subprocess.run(["squeue", "-h", "-s", "-o", "%j"], capture_output=True, text=True).stdout


@pytest.mark.integration
@pytest.mark.slurm
def test_a_new_run_reaps_a_dead_runs_leftovers_first_and_says_so(tmp_path):
    require_slurm()
    state = tmp_path / "state"
    dead = "20261201-000000-dead"
    left = subprocess.run(["salloc", "--no-shell", "-N1", "-n1", "--oversubscribe",
                           f"--job-name=pytest-llama4-{dead}"], capture_output=True, text=True, check=True, timeout=60)
    gone = subprocess.Popen(["true"])
    gone.wait()
    RunRecord(dead, HERE, gone.pid, time.time()).write(state / "runs")
    env = inner_env({}) | {janitor.STATE_ENV: str(state)}
    (tmp_path / "test_up.py").write_text("def test_up(deployment):\n    pass\n")
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                 f"--reports-dir={tmp_path}", "--launcher=slurm", "--slurm-alloc", "test_up.py"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "pytest-llama4: cancelled job" in result.stderr and f"(pytest-llama4-{dead}) of run {dead}" in \
            result.stderr
        assert "before starting: cancelled job" in result.stdout  # in the terminal summary too
        assert _job_named(f"pytest-llama4-{dead}") == ""
        assert list((state / "runs").iterdir()) == [], "the dead run and this finished one leave no record"
    finally:
        job = left.stderr.split()[-1]
        subprocess.run(["scancel", job], check=False)
