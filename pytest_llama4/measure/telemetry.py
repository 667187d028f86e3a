"""GPU telemetry: per-GPU memory and utilisation, sampled on every node of the deployment while a test runs.

Two kinds of source feed one `GpuMonitor`: NVML polled by a thread (launcher=local), or one helper step per node
(`Launcher.run_on_nodes`: `srun --overlap`) running `nvidia-smi --query-gpu=... -lms N`, whose CSV lines a thread
parses as they come (launcher=slurm). The monitor keeps every sample and appends it to reports/<run-id>/gpu.csv,
which summary.html plots. Where there is nothing to sample, `NoGpu` carries the exact reason a GPU test skips with.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import fcntl
import functools
import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

import pynvml

from ..deploy.launchers.base import HELPER_STOP_GRACE_S, Launcher, NodeStep
from ..deploy.logtail import tail

DEFAULT_INTERVAL_S = 0.5
START_TIMEOUT_S = 60.0  # an srun step can take this long to start on a busy controller
CSV_FILE = "gpu.csv"
CSV_COLUMNS = ("time", "node", "gpu", "name", "memory_used_mib", "memory_total_mib", "utilization_pct")
QUERY_FIELDS = ("index", "name", "memory.used", "memory.total", "utilization.gpu")
ENDPOINT_REASON = "no GPU telemetry on launcher=endpoint: the deployment's nodes are not ours to sample"
_LOCAL = "no GPU telemetry on launcher=local: "
# What nvidia-smi or srun print (stdout or stderr) on a node without a usable GPU: a skip, not a failure.
_NO_GPU_SIGNS = ("No devices were found", "couldn't communicate with the NVIDIA driver",
                 "nvidia-smi: No such file or directory", "nvidia-smi: command not found")
_NOT_A_VALUE = ("", "N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", "[GPU requires reset]")


class NoGpu(Exception):
    """Nothing to sample here; str(error) is the exact reason GPU tests skip with."""


class GpuTelemetryError(Exception):
    """A source that had GPUs to sample failed (its step died, NVML errored): a failure, never a skip."""


@dataclass(frozen=True)
class GpuSample:
    time: float  # unix seconds; the GPUs of one node share it within one poll, so they can be summed
    node: str
    gpu: int
    name: str
    memory_used_mib: float | None
    memory_total_mib: float | None
    utilization_pct: float | None


Emit = Callable[[GpuSample], None]


class GpuSource(Protocol):
    node: str  # the node it samples, for messages

    def start(self, emit: Emit) -> None:
        """Begin sampling in the background, handing each sample to `emit` (from any thread). May raise NoGpu."""

    def stop(self) -> None:
        """Stop sampling and release every thread and process; idempotent."""

    def failure(self) -> Exception | None:
        """NoGpu or GpuTelemetryError when the source ended on its own; None while it runs or once stopped."""


# --- nvidia-smi CSV -----------------------------------------------------------------------------------------


def nvidia_smi_query(interval_ms: int | None = None) -> tuple[str, ...]:
    """The nvidia-smi command line: one CSV line per GPU, every `interval_ms` when given, else once."""
    argv = ("nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits")
    return (*argv, "-lms", str(interval_ms)) if interval_ms is not None else argv


def parse_nvidia_smi_line(line: str, *, node: str, at: float) -> GpuSample:
    """One line of `nvidia_smi_query()` output, e.g. `0, NVIDIA H100 80GB HBM3, 1234, 81559, 7`.

    Values nvidia-smi cannot give ("[N/A]", "[Not Supported]") become None. Anything that is not such a line
    (an error message, a blank line) raises ValueError.
    """
    fields = next(csv.reader([line.strip()], skipinitialspace=True), [])
    if len(fields) != len(QUERY_FIELDS) or not fields[0].strip().isdigit():
        raise ValueError(f"not an nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} line: {line.strip()!r}")
    index, name, used, total, utilization = (f.strip() for f in fields)
    return GpuSample(at, node, int(index), name, _number(used), _number(total), _number(utilization))


def _number(text: str) -> float | None:
    return None if text in _NOT_A_VALUE else float(text)


def read_nvidia_smi(lines: Iterable[str], *, node: str, emit: Emit, unparsed: Callable[[str], None]) -> None:
    """Parse `nvidia_smi_query(interval)` output as it arrives, until it ends; other lines go to `unparsed`.

    nvidia-smi prints the GPUs of one tick in index order, so a line whose index does not grow starts a tick;
    every GPU of a tick gets the tick's time.
    """
    tick_at, last_index = 0.0, -1
    for line in lines:
        try:
            sample = parse_nvidia_smi_line(line, node=node, at=time.time())
        except ValueError:
            unparsed(line.strip())
            continue
        if sample.gpu <= last_index or last_index < 0:
            tick_at = sample.time
        last_index = sample.gpu
        emit(replace(sample, time=tick_at))


# --- NVML (launcher=local) ----------------------------------------------------------------------------------


def nvml_unavailable_reason() -> str | None:
    """Why NVML cannot sample a GPU on this machine, or None when it can."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return _nvml_init_reason(error)
    try:
        return None if pynvml.nvmlDeviceGetCount() else "NVML found no GPU"
    finally:
        pynvml.nvmlShutdown()


def _nvml_init_reason(error: pynvml.NVMLError) -> str:
    if isinstance(error, pynvml.NVMLError_LibraryNotFound):
        return "NVML not available (libnvidia-ml.so.1 not found)"
    if isinstance(error, pynvml.NVMLError_DriverNotLoaded):
        return "NVML not available (the NVIDIA driver is not loaded)"
    return f"NVML did not start ({error})"


class NvmlSource:
    """Polls every GPU of this machine through NVML from a thread, every `interval_s`."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, node: str | None = None) -> None:
        self.interval_s = interval_s
        self.node = node or socket.gethostname()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None

    def start(self, emit: Emit) -> None:
        reason = nvml_unavailable_reason()
        if reason:
            raise NoGpu(_LOCAL + reason)
        pynvml.nvmlInit()  # held until stop(): NVML counts its inits
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self._thread = threading.Thread(target=self._poll, args=(handles, emit), name="gpu-telemetry-nvml",
                                        daemon=True)
        self._thread.start()

    def _poll(self, handles: list, emit: Emit) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                at = time.time()
                for index, handle in enumerate(handles):
                    emit(self._sample(index, handle, at))
            except pynvml.NVMLError as error:
                self._failure = GpuTelemetryError(f"NVML on {self.node} failed while sampling: {error}")
                return
            next_at += self.interval_s  # a fixed schedule: slow polls do not stretch the interval
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def _sample(self, index: int, handle: object, at: float) -> GpuSample:
        memory = _memory_info(handle)
        try:
            utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except pynvml.NVMLError_NotSupported:
            utilization = None
        return GpuSample(at, self.node, index, pynvml.nvmlDeviceGetName(handle), memory.used / 2**20,
                         memory.total / 2**20, utilization)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            pynvml.nvmlShutdown()

    def failure(self) -> Exception | None:
        return self._failure


def _memory_info(handle: object) -> object:
    """Version 2 first: its `used` leaves out the driver's reserved memory, as nvidia-smi's memory.used does."""
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NotSupported, pynvml.NVMLError_ArgumentVersionMismatch):
        return pynvml.nvmlDeviceGetMemoryInfo(handle)


# --- nvidia-smi in a helper step on each node (launcher=slurm) ----------------------------------------------


class SlurmNvidiaSmiSource:
    """One `nvidia-smi -lms N` helper step on one node (no image: nvidia-smi comes with the node's driver); its
    output is parsed line by line as it comes. stop() ends the step as the launcher ends every step.

    The step is named after this process id too, so that concurrent monitors (pytest-xdist workers) never cancel
    each other's steps.
    """

    def __init__(self, runner: Launcher, node: str, *, log_path: Path, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.runner = runner
        self.node = node
        self.log_path = log_path
        self.name = f"gpu-telemetry-{os.getpid()}-{node}"
        self.argv = nvidia_smi_query(max(1, round(interval_s * 1000)))
        self._step: NodeStep | None = None
        self._stopping = threading.Event()
        self._failure: Exception | None = None
        self._unparsed: collections.deque[str] = collections.deque(maxlen=5)  # nvidia-smi prints errors to stdout

    def start(self, emit: Emit) -> None:
        """Started from the calling thread, which the step is tied to (Launcher.run_on_nodes)."""
        self._step = self.runner.run_on_nodes(self.argv, (self.node,), name=self.name, log_path=self.log_path,
                                              follow=functools.partial(self._read, emit=emit))

    def _read(self, step: NodeStep, emit: Emit) -> None:
        read_nvidia_smi(step.stdout, node=self.node, emit=emit, unparsed=self._unparsed.append)
        if not self._stopping.is_set():
            self._failure = self._ended_reason(step)

    def _ended_reason(self, step: NodeStep) -> Exception:
        with contextlib.suppress(subprocess.TimeoutExpired):  # stdout closed: srun is on its way out
            step.process.wait(timeout=HELPER_STOP_GRACE_S)
        said = "\n".join([*filter(None, self._unparsed), tail(self.log_path, 5)])
        if any(sign in said for sign in _NO_GPU_SIGNS):
            last = [line for line in said.splitlines() if any(sign in line for sign in _NO_GPU_SIGNS)][-1]
            return NoGpu(f"no GPU telemetry on launcher=slurm: nvidia-smi on {self.node}: {last.strip()}")
        return GpuTelemetryError(f"the GPU telemetry step on {self.node} ended (srun exit "
                                 f"{step.returncode()}): {said}")

    def stop(self) -> None:
        self._stopping.set()
        if self._step is not None:
            self._step.stop()
            self._step = None

    def failure(self) -> Exception | None:
        return self._failure


# --- the monitor --------------------------------------------------------------------------------------------


class GpuMonitor:
    """Runs sources for the span of a `with` block, keeps their samples and appends them to `csv_path`.

    Entering returns once every source has delivered its first sample, so what the block does is measured
    against a baseline taken before it. A source without GPUs makes entering raise NoGpu; a source that dies
    makes leaving raise GpuTelemetryError (unless the block already raised).
    """

    def __init__(self, sources: Sequence[GpuSource], csv_path: Path | None = None, *,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.sources = list(sources)
        self.csv_path = csv_path
        self.start_timeout_s = start_timeout_s
        self.samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self._csv: io.TextIOWrapper | None = None
        self._first = [threading.Event() for _ in self.sources]

    def __enter__(self) -> GpuMonitor:
        try:
            for source, first in zip(self.sources, self._first, strict=True):
                source.start(self._emitter(first))
            self._wait_for_first_samples()
        except BaseException:
            self._stop_all()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._stop_all()
        failures = [str(f) for f in (s.failure() for s in self.sources) if f is not None]
        if failures and exc_type is None:
            raise GpuTelemetryError("GPU telemetry stopped during the test: " + "; ".join(failures))

    def _emitter(self, first: threading.Event) -> Emit:
        def emit(sample: GpuSample) -> None:
            with self._lock:
                self.samples.append(sample)
                if self.csv_path is not None:
                    if self._csv is None:  # opened by the first sample: a run without GPUs gets no gpu.csv
                        self._csv = _open_csv(self.csv_path)
                    csv.writer(self._csv).writerow(_csv_row(sample))
                    self._csv.flush()  # a crashed run keeps what was sampled
            first.set()

        return emit

    def _wait_for_first_samples(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        for source, first in zip(self.sources, self._first, strict=True):
            while not first.wait(0.05):
                if (failure := source.failure()) is not None:
                    raise failure
                if time.monotonic() > deadline:
                    raise GpuTelemetryError(f"no GPU sample from {source.node} within {self.start_timeout_s:g}s")

    def _stop_all(self) -> None:
        """Every source is stopped even when one of them fails to stop; the first such error is raised after."""
        errors = []
        for source in self.sources:
            try:
                source.stop()
            except Exception as error:
                errors.append(error)
        with self._lock:
            if self._csv is not None:
                self._csv.close()
                self._csv = None
        if errors:
            raise errors[0]

    def peak_used_mib(self) -> dict[tuple[str, int], float]:
        with self._lock:
            return peak_used_mib(self.samples)

    def node_peak_used_mib(self) -> dict[str, float]:
        with self._lock:
            return node_peak_used_mib(self.samples)


def peak_used_mib(samples: Iterable[GpuSample]) -> dict[tuple[str, int], float]:
    """The most memory each GPU had in use, by (node, gpu index)."""
    return _peaks(((s.node, s.gpu), s.memory_used_mib) for s in samples)


def node_peak_used_mib(samples: Iterable[GpuSample]) -> dict[str, float]:
    """The most memory each node had in use at one time, summed over its GPUs sampled together."""
    totals: dict[tuple[str, float], float] = collections.defaultdict(float)
    for s in samples:
        if s.memory_used_mib is not None:
            totals[s.node, s.time] += s.memory_used_mib
    return _peaks((node, used) for (node, _), used in totals.items())


Key = TypeVar("Key", bound=Hashable)


def _peaks(pairs: Iterable[tuple[Key, float | None]]) -> dict[Key, float]:
    peaks: dict[Key, float] = {}
    for key, used in pairs:
        if used is not None:
            peaks[key] = max(used, peaks.get(key, used))
    return peaks


def _open_csv(path: Path) -> io.TextIOWrapper:
    """Append mode, header once: every monitor of a run (one per test, any xdist worker) adds to one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", newline="", encoding="utf-8")
    fcntl.flock(handle, fcntl.LOCK_EX)  # two workers creating the file must not both write the header
    try:
        if handle.tell() == 0:
            csv.writer(handle).writerow(CSV_COLUMNS)
            handle.flush()
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
    return handle


def _csv_row(sample: GpuSample) -> list[str]:
    def text(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")

    return [f"{sample.time:.3f}", sample.node, str(sample.gpu), sample.name, text(sample.memory_used_mib),
            text(sample.memory_total_mib), text(sample.utilization_pct)]


def read_csv(path: Path) -> list[GpuSample]:
    """The samples of a gpu.csv, in file order."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [GpuSample(float(row["time"]), row["node"], int(row["gpu"]), row["name"],
                          *(_number(row[c]) for c in CSV_COLUMNS[4:]))
                for row in csv.DictReader(handle)]


# --- for the gpu_monitor fixture ----------------------------------------------------------------------------


def gpu_unavailable_reason(runner: Launcher | None) -> str | None:
    """Why a GPU test cannot be measured where `runner` runs the deployment (None: an --endpoint), known without
    starting anything; None when it may be. On SLURM it is only known once nvidia-smi ran on the nodes: entering
    the monitor raises NoGpu then."""
    if runner is None:
        return ENDPOINT_REASON
    if runner.runs_here:
        reason = nvml_unavailable_reason()
        return _LOCAL + reason if reason else None
    return None


def monitor_for(runner: Launcher | None, run_dir: Path, interval_s: float = DEFAULT_INTERVAL_S) -> GpuMonitor:
    """The monitor of every node `runner` runs the deployment on, appending to run_dir/gpu.csv: NVML here for a
    local deployment, else one nvidia-smi step per node. Raises NoGpu with the skip reason."""
    if reason := gpu_unavailable_reason(runner):
        raise NoGpu(reason)
    assert runner is not None  # an --endpoint has its reason
    if runner.runs_here:
        return GpuMonitor([NvmlSource(interval_s)], run_dir / CSV_FILE)
    sources = [SlurmNvidiaSmiSource(runner, node, interval_s=interval_s,
                                    log_path=run_dir / "logs" / f"gpu-telemetry-{node}.log")
               for node in runner.nodes]
    return GpuMonitor(sources, run_dir / CSV_FILE)
