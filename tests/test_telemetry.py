"""GPU telemetry without a GPU: the nvidia-smi parser, the skip reasons, gpu.csv, and the SLURM step.

The NVML source itself is proven on a real GPU by benchmarks/gpu_sampler_proof.py (benchmarks/README.md); here a
small source double feeds the monitor. The SLURM step runs for real on scripts/slurm-local, with a stand-in
nvidia-smi on PATH (the nodes have no GPU).
"""

from __future__ import annotations

import csv
import ctypes
import os
import subprocess
import threading
import time
from pathlib import Path

import pynvml
import pytest

from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy.launchers import node_runner
from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.local import LocalLauncher
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher
from pytest_llama4.measure.telemetry import (
    CSV_COLUMNS,
    ENDPOINT_REASON,
    GpuMonitor,
    GpuSample,
    GpuTelemetryError,
    NoGpu,
    SlurmNvidiaSmiSource,
    gpu_unavailable_reason,
    monitor_for,
    parse_nvidia_smi_line,
    read_csv,
    read_nvidia_smi,
)

from .conftest import require

# Lines as `nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu
# --format=csv,noheader,nounits` prints them (the first from the H100 run in benchmarks/gpu_sampler_proof.txt).
H100_LINE = "0, NVIDIA H100 80GB HBM3, 41581, 81559, 20"
NOT_AVAILABLE_LINE = "3, NVIDIA GB200, [N/A], 189471, [Not Supported]"


def test_parses_an_nvidia_smi_line() -> None:
    assert parse_nvidia_smi_line(H100_LINE + "\r\n", node="gb-01", at=12.5) == GpuSample(
        12.5, "gb-01", 0, "NVIDIA H100 80GB HBM3", 41581.0, 81559.0, 20.0)


def test_values_nvidia_smi_cannot_give_are_none() -> None:
    sample = parse_nvidia_smi_line(NOT_AVAILABLE_LINE, node="gb-02", at=0.0)
    assert (sample.gpu, sample.name, sample.memory_used_mib, sample.memory_total_mib, sample.utilization_pct) == (
        3, "NVIDIA GB200", None, 189471.0, None)


@pytest.mark.parametrize("line", [
    "No devices were found",
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
    "NVIDIA driver is installed and running.",
    "",
    "index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]",  # a header: csv without noheader
])
def test_other_output_is_not_a_sample(line: str) -> None:
    with pytest.raises(ValueError, match="not an nvidia-smi"):
        parse_nvidia_smi_line(line, node="n", at=0.0)


def test_the_gpus_of_one_tick_share_its_time() -> None:
    lines = ["0, H100, 10, 80, 1\n", "1, H100, 20, 80, 2\n", "0, H100, 11, 80, 3\n", "1, H100, 21, 80, 4\n",
             "Unable to determine the device handle for GPU0000:04:00.0: Unknown Error\n"]
    samples: list[GpuSample] = []
    unparsed: list[str] = []

    def slowly():  # lines arrive over time, as from a pipe
        for line in lines:
            time.sleep(0.01)
            yield line

    read_nvidia_smi(slowly(), node="n", emit=samples.append, unparsed=unparsed.append)
    assert [(s.gpu, s.memory_used_mib) for s in samples] == [(0, 10), (1, 20), (0, 11), (1, 21)]
    assert samples[0].time == samples[1].time < samples[2].time == samples[3].time
    assert unparsed == [lines[-1].strip()]


# --- skip reasons -------------------------------------------------------------------------------------------


def nvml_loadable() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(nvml_loadable(), reason="this machine has libnvidia-ml.so.1: the reason differs")
def test_no_nvml_here_is_the_skip_reason(tmp_path: Path) -> None:
    reason = "no GPU telemetry on launcher=local: NVML not available (libnvidia-ml.so.1 not found)"
    assert gpu_unavailable_reason(LocalLauncher("run")) == reason
    with pytest.raises(NoGpu) as caught:
        monitor_for(LocalLauncher("run"), tmp_path)
    assert str(caught.value) == reason
    with pytest.raises(NoGpu) as caught:  # what node_runner makes of local settings
        monitor_for(node_runner(Settings(launcher="local"), "run", None), tmp_path)
    assert str(caught.value) == reason
    assert not (tmp_path / "gpu.csv").exists()


def test_nvml_without_a_gpu_or_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 0)
    assert gpu_unavailable_reason(LocalLauncher("run")) == "no GPU telemetry on launcher=local: NVML found no GPU"

    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert gpu_unavailable_reason(LocalLauncher("run")) == (
        "no GPU telemetry on launcher=local: NVML not available (the NVIDIA driver is not loaded)")


def test_endpoint_deployments_are_not_ours_to_sample(tmp_path: Path) -> None:
    settings = Settings(launcher="endpoint", endpoint="http://10.0.0.1:8000")
    assert gpu_unavailable_reason(None) == ENDPOINT_REASON  # an endpoint deployment has no launcher
    with pytest.raises(NoGpu, match=r"^no GPU telemetry on launcher=endpoint: the deployment's nodes are not ours"):
        monitor_for(node_runner(settings, "run", None), tmp_path)
    with pytest.raises(NoGpu, match=r"^no GPU telemetry on launcher=endpoint: the deployment's nodes are not ours"):
        monitor_for(None, tmp_path)


# --- the monitor and gpu.csv --------------------------------------------------------------------------------


class ScriptedSource:
    """A source double: emits its ticks (lists of samples) from a thread, or fails when told to."""

    def __init__(self, node: str, ticks: list[list[GpuSample]], *, fail_after: int | None = None,
                 failure: Exception | None = None) -> None:
        self.node = node
        self.ticks = ticks
        self.fail_after = fail_after
        self._failure_to_raise = failure
        self._failure: Exception | None = None
        self.stopped = False
        self._thread: threading.Thread | None = None

    def start(self, emit) -> None:
        self._thread = threading.Thread(target=self._run, args=(emit,))
        self._thread.start()

    def _run(self, emit) -> None:
        for i, tick in enumerate(self.ticks):
            if i == self.fail_after:
                self._failure = self._failure_to_raise
                return
            for sample in tick:
                emit(sample)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self.stopped = True

    def failure(self) -> Exception | None:
        return self._failure


def tick(node: str, at: float, *used: float | None) -> list[GpuSample]:
    return [GpuSample(at, node, gpu, "NVIDIA H100 80GB HBM3", mib, 81559.0, 50.0 if mib else None)
            for gpu, mib in enumerate(used)]


def test_monitor_writes_gpu_csv_and_finds_peaks(tmp_path: Path) -> None:
    csv_path = tmp_path / "run" / "gpu.csv"
    node1 = ScriptedSource("node1", [tick("node1", 100.0, 1000, 9000), tick("node1", 100.5, 9500, 1000.25)])
    node2 = ScriptedSource("node2", [tick("node2", 100.1, 2000, None)])
    with GpuMonitor([node1, node2], csv_path) as monitor:
        pass
    assert node1.stopped and node2.stopped
    assert len(monitor.samples) == 6
    assert monitor.peak_used_mib() == {("node1", 0): 9500, ("node1", 1): 9000, ("node2", 0): 2000}
    # Per node: the most in use at one time (10,500 at 100.5), not the sum of each GPU's peak (18,500).
    assert monitor.node_peak_used_mib() == {"node1": 10500.25, "node2": 2000}

    with GpuMonitor([ScriptedSource("node1", [tick("node1", 200.0, 1, 2)])], csv_path):
        pass  # a second test of the same run appends
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(CSV_COLUMNS)
    assert list(CSV_COLUMNS) not in rows[1:]
    assert len(rows) == 1 + 6 + 2
    assert ["100.100", "node2", "1", "NVIDIA H100 80GB HBM3", "", "81559", ""] in rows
    assert ["100.500", "node1", "1", "NVIDIA H100 80GB HBM3", "1000.25", "81559", "50"] in rows
    assert sorted(read_csv(csv_path), key=lambda s: (s.time, s.node, s.gpu)) == sorted(
        [*monitor.samples, *tick("node1", 200.0, 1, 2)], key=lambda s: (s.time, s.node, s.gpu))


def test_a_source_without_gpus_skips_before_the_block(tmp_path: Path) -> None:
    healthy = ScriptedSource("node1", [tick("node1", 1.0, 5)])
    reason = "no GPU telemetry on launcher=slurm: nvidia-smi on node2: No devices were found"
    no_gpu = ScriptedSource("node2", [[]], fail_after=0, failure=NoGpu(reason))
    with pytest.raises(NoGpu, match="nvidia-smi on node2: No devices were found"), \
            GpuMonitor([no_gpu, healthy], tmp_path / "gpu.csv"):
        pytest.fail("the block must not run")
    assert no_gpu.stopped and healthy.stopped


def test_a_source_that_dies_fails_the_test(tmp_path: Path) -> None:
    dying = ScriptedSource("node1", [tick("node1", 1.0, 5), tick("node1", 2.0, 6)], fail_after=1,
                           failure=GpuTelemetryError("the GPU telemetry step on node1 ended (srun exit 1)"))
    with pytest.raises(GpuTelemetryError, match="stopped during the test: the GPU telemetry step on node1 ended"), \
            GpuMonitor([dying], tmp_path / "gpu.csv"):
        pass
    assert read_csv(tmp_path / "gpu.csv") == tick("node1", 1.0, 5)


# --- SLURM --------------------------------------------------------------------------------------------------

ALLOCATION = Allocation("4242", ("gb-01", "gb-02"))


def test_one_srun_step_per_node_of_a_two_node_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 777)
    run_dir = tmp_path / "20261124-210000-abcd"
    monitor = monitor_for(node_runner(Settings(launcher="slurm"), run_dir.name, ALLOCATION), run_dir, interval_s=0.25)
    assert [source.node for source in monitor.sources] == ["gb-01", "gb-02"]
    assert monitor.csv_path == tmp_path / "20261124-210000-abcd" / "gpu.csv"
    second = monitor.sources[1]
    assert isinstance(second, SlurmNvidiaSmiSource)
    assert isinstance(second.runner, SlurmLauncher) and second.runner.allocation == ALLOCATION
    assert second.runner.image is None, "no container: nvidia-smi comes with the node's driver"
    # what run_on_nodes starts for a followed step (tests/test_run_on_nodes.py proves it runs exactly this)
    assert second.runner.helper_argv(second.argv, (second.node,), name=second.name, unbuffered=True) == [
        "srun", "--unbuffered", "--overlap", "--jobid=4242",
        "--job-name=llama4-20261124-210000-abcd-gpu-telemetry-777-gb-02",
        "--nodes=1", "--nodelist=gb-02", "--ntasks-per-node=1", "--ntasks=1", "--kill-on-bad-exit=1",
        "nvidia-smi", "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
        "--format=csv,noheader,nounits", "-lms", "250"]
    assert second.log_path == tmp_path / "20261124-210000-abcd" / "logs" / "gpu-telemetry-gb-02.log"


def test_slurm_needs_the_allocation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the deployment's allocation"):
        node_runner(Settings(launcher="slurm"), "run", None)


FAKE_NVIDIA_SMI = """#!/bin/sh
# Stands in for nvidia-smi on GPU-less SLURM nodes: the query's CSV, two GPUs, every -lms milliseconds.
[ -n "$NO_GPU" ] && { echo "No devices were found"; exit 6; }
used=1000
while :; do
  echo "0, NVIDIA H100 80GB HBM3, $used, 81559, 3"
  echo "1, NVIDIA H100 80GB HBM3, [N/A], 81559, [Not Supported]"
  used=$((used + 1)); sleep 0.1
done
"""


@pytest.fixture(scope="module")
def slurm_up() -> None:
    from .test_slurm import slurm_available

    require(slurm_available(), "the SLURM telemetry tests")  # asked once: without a controller sinfo takes seconds


@pytest.fixture
def slurm_job(slurm_up: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 2-node allocation on scripts/slurm-local, with the stand-in nvidia-smi first on the steps' PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")  # srun passes it on to the step
    out = subprocess.run(["salloc", "--no-shell", "-N2", "--job-name=llama4-tests"], capture_output=True, text=True,
                         timeout=60, check=True).stderr
    job = out.split("Granted job allocation ")[1].split()[0]
    yield Allocation(job, ("gpu-a01", "gpu-a02"))
    subprocess.run(["scancel", job], check=False)


def steps_of(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.split()[0].split(".")[-1].startswith(("extern", "batch"))]


@pytest.mark.alone
@pytest.mark.slurm
def test_slurm_steps_sample_every_node_and_leave_nothing(tmp_path: Path, slurm_job: Allocation) -> None:
    run_dir = tmp_path / "20261124-210000-abcd"
    with monitor_for(SlurmLauncher(slurm_job, run_dir.name), run_dir, interval_s=0.1) as monitor:
        assert len(steps_of(slurm_job.job_id)) == 2, "one telemetry step per node"
        time.sleep(1.0)
    assert steps_of(slurm_job.job_id) == [], "telemetry steps left in squeue -s"
    header = (run_dir / "logs" / "gpu-telemetry-gpu-a02.log").read_text().splitlines()[0]
    assert f"srun --unbuffered --overlap --jobid={slurm_job.job_id} --job-name=llama4-{run_dir.name}-gpu-telemetry-" \
           in header and " nvidia-smi --query-gpu=" in header
    assert not [s for s in monitor.sources if s._step is not None]  # every srun client reaped
    by_node = {node: [s for s in monitor.samples if s.node == node] for node in slurm_job.nodes}
    for node, samples in by_node.items():
        assert len(samples) >= 10, f"{node}: only {len(samples)} samples in about a second at 100 ms"
        assert {s.gpu for s in samples} == {0, 1}
        assert len({s.time for s in samples}) >= 8, "ticks arrived in bursts, not as printed"
    assert len(read_csv(run_dir / "gpu.csv")) == len(monitor.samples)
    assert monitor.peak_used_mib()[("gpu-a02", 0)] >= 1010


@pytest.mark.slurm
@pytest.mark.parametrize(("env", "said"), [
    ({"NO_GPU": "1"}, "No devices were found"),
    ({"PATH": "/usr/bin:/bin"}, "slurmstepd-gpu-a01: error: execve(): nvidia-smi: No such file or directory"),
], ids=["no-devices", "no-nvidia-smi"])
def test_slurm_nodes_without_gpus_skip_with_the_reason(tmp_path: Path, slurm_job: Allocation, env: dict[str, str],
                                                       said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NoGpu) as caught, monitor_for(node_runner(Settings(launcher="slurm"), tmp_path.name, slurm_job),
                                                     tmp_path):
        pass
    assert str(caught.value) == f"no GPU telemetry on launcher=slurm: nvidia-smi on gpu-a01: {said}"
    assert steps_of(slurm_job.job_id) == []
