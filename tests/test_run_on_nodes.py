"""Launcher.run_on_nodes: a helper step that streams its lines as printed, or runs once and returns its output, and
is gone after stop on every path: the process group locally, the SLURM step (`squeue -s`) and its srun client."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.base import NodeStep, StepError, StepTimeout
from pytest_llama4.deploy.launchers.local import RUN_LABEL_ENV, SERVICE_LABEL_ENV, LocalLauncher
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher

from .test_slurm import allocation, require_slurm, steps_of  # noqa: F401 (fixture)

# Prints its labels and its child's pid, then a line every 50 ms; on SLURM without flushing, so the lines arrive as
# printed only on srun --unbuffered's terminal (Python line-buffers a tty). The child shares its process group.
TICKER = textwrap.dedent(f"""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("labels", os.environ["{RUN_LABEL_ENV}"], os.environ["{SERVICE_LABEL_ENV}"], child.pid,
          os.environ.get("SLURMD_NODENAME", "here"), flush=True)
    i = 0
    while True:
        print("tick", i, flush="SLURMD_NODENAME" not in os.environ)
        i += 1
        time.sleep(0.05)
""")


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie and not gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Lines:
    """A `follow` function that keeps every line with the time it arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.ended = threading.Event()

    def __call__(self, step: NodeStep) -> None:
        for line in step.stdout:
            self.lines.append((time.monotonic(), line.strip()))
        self.ended.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            assert time.monotonic() < deadline, f"only {self.lines} within {timeout:g}s"
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ local


def test_a_local_step_streams_its_lines_and_stop_ends_its_whole_group(tmp_path):
    follow = Lines()
    step = LocalLauncher("run-7").run_on_nodes((sys.executable, "-c", TICKER), ("127.0.0.1",), name="ticker",
                                               log_path=tmp_path / "ticker.log", follow=follow)
    try:
        follow.wait_for(6)
        assert step.returncode() is None, "the lines arrived while it runs"
    finally:
        step.stop()
    _, run, name, child, node = follow.lines[0][1].split()
    assert (run, name, node) == ("run-7", "ticker", "here")
    assert [text for _, text in follow.lines[1:6]] == [f"tick {i}" for i in range(5)]
    assert follow.ended.is_set() and step.stdout.closed
    assert not alive(step.process.pid) and not alive(int(child)), "the step's process group outlived stop()"
    assert (tmp_path / "ticker.log").read_text().startswith("# ")  # the command line heads the log
    step.stop()  # idempotent


def test_a_local_one_shot_returns_its_output_and_logs_it(tmp_path):
    script = "import sys; print('err line', file=sys.stderr); print('out 1'); print('out 2'); sys.exit(3)"
    log = tmp_path / "logs" / "probe.log"
    step = LocalLauncher("run-7").run_on_nodes((sys.executable, "-c", script), ("127.0.0.1",), name="probe",
                                               log_path=log)
    done = step.finish(timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out 1\nout 2\n", "err line\n")
    header, *rest = log.read_text().splitlines()
    assert header.startswith("# ") and header.endswith(shlex.join((sys.executable, "-c", script)))
    assert rest == ["err line", "out 1", "out 2"]
    without_log = LocalLauncher("run-7").run_on_nodes((sys.executable, "-c", script), ("127.0.0.1",), name="probe")
    assert without_log.finish(timeout=30).stderr == "err line\n"


def test_a_local_one_shot_past_its_time_is_stopped(tmp_path):
    step = LocalLauncher("run-7").run_on_nodes((sys.executable, "-c", TICKER), ("127.0.0.1",), name="slow")
    with pytest.raises(StepTimeout, match=r"(?s)^`\S+ -c .*` did not finish within 0.5s$"):
        step.finish(timeout=0.5)
    assert step.returncode() is not None and not alive(step.process.pid)


def test_an_interrupted_one_shot_is_stopped():
    step = LocalLauncher("run-7").run_on_nodes((sys.executable, "-c", TICKER), ("127.0.0.1",), name="slow")

    def interrupt() -> None:
        raise KeyboardInterrupt("Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        step.finish(timeout=60, poll=interrupt)
    assert not alive(step.process.pid)


def test_a_step_that_cannot_start_says_what_ran(tmp_path):
    with pytest.raises(StepError, match=r"^`/nonexistent/probe --x ...` failed: \[Errno 2\]"):
        LocalLauncher("run-7").run_on_nodes(("/nonexistent/probe", "--x"), ("127.0.0.1",), name="probe",
                                            log_path=tmp_path / "probe.log")


# ------------------------------------------------------------------------------------------------ SLURM


@pytest.fixture
def job(allocation) -> Allocation:  # noqa: F811 (the fixture imported above)
    require_slurm()
    env = allocation(2)
    return Allocation(env["SLURM_JOB_ID"], ("gpu-a01", "gpu-a02"))


@pytest.mark.slurm
def test_slurm_steps_stream_lines_as_printed_and_stop_leaves_no_step(tmp_path, job, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the ticker's Python buffers as on a cluster
    launcher = SlurmLauncher(job, "run-7")
    follows = {node: Lines() for node in job.nodes}
    steps = [launcher.run_on_nodes((sys.executable, "-c", TICKER), (node,), name=f"ticker-{node}",
                                   log_path=tmp_path / f"ticker-{node}.log", follow=follows[node])
             for node in job.nodes]
    try:
        for follow in follows.values():
            follow.wait_for(11)
        names = sorted(line.split()[1] for line in steps_of(job.job_id))
        assert names == ["llama4-run-7-ticker-gpu-a01", "llama4-run-7-ticker-gpu-a02"]
    finally:
        for step in steps:
            step.stop()
    assert steps_of(job.job_id) == [], "helper steps left in squeue -s"
    assert all(step.returncode() is not None for step in steps), "every srun client reaped"
    for node, follow in follows.items():
        _, run, name, _, on = follow.lines[0][1].split()
        assert (run, name, on) == ("run-7", f"ticker-{node}", node)
        ticks = [at for at, text in follow.lines if text.startswith("tick")]
        assert ticks[-1] - ticks[0] > 0.3, f"{node}: the ticks arrived in one burst, not as printed"
    header = (tmp_path / "ticker-gpu-a02.log").read_text().splitlines()[0]
    assert f"srun --unbuffered --overlap --jobid={job.job_id} --job-name=llama4-run-7-ticker-gpu-a02 --nodes=1 " \
           "--nodelist=gpu-a02 " in header


@pytest.mark.slurm
def test_a_slurm_one_shot_runs_a_task_on_each_node_and_returns_its_output(tmp_path, job):
    step = SlurmLauncher(job, "run-7").run_on_nodes(("sh", "-c", 'echo "$SLURMD_NODENAME"; echo oops >&2'),
                                                    job.nodes, name="probe", log_path=tmp_path / "probe.log")
    done = step.finish(timeout=60)
    assert done.returncode == 0 and sorted(done.stdout.split()) == ["gpu-a01", "gpu-a02"]
    assert done.stderr.split() == ["oops", "oops"]
    assert steps_of(job.job_id) == []
    header = (tmp_path / "probe.log").read_text().splitlines()[0]
    assert f"srun --overlap --jobid={job.job_id} --job-name=llama4-run-7-probe --nodes=2 --nodelist=gpu-a01,gpu-a02 " \
           "--ntasks-per-node=1 --ntasks=2 " in header


@pytest.mark.slurm
def test_a_slurm_one_shot_past_its_time_leaves_no_step(job):
    step = SlurmLauncher(job, "run-7").run_on_nodes(("sleep", "613"), job.nodes, name="slow")
    deadline = time.monotonic() + 30
    while not steps_of(job.job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert steps_of(job.job_id), "the step never started"
    with pytest.raises(StepTimeout, match=r"^`srun --overlap --jobid=\d+ ...` did not finish within 1s"):
        step.finish(timeout=1)
    assert steps_of(job.job_id) == [] and step.returncode() is not None
    assert subprocess.run(["pgrep", "-f", "sleep 613"], capture_output=True).stdout.strip() == b""
