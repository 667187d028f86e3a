"""Proof that the GPU sampler sees what a process allocates, within 2% (run on a GPU machine; benchmarks/README.md).

For each size K a separate torch process creates its CUDA context and waits; the samples taken then are the
baseline. It allocates exactly K GiB (`torch.empty(K * 2**30, dtype=torch.uint8, device="cuda")`), holds it,
frees it and waits again. The sampled delta (median while held minus median of the baseline) must be within 2%
of K GiB, and the memory must come back after the free.

Two sources sample at the same time through one GpuMonitor: the NVML source (what launcher=local uses) and
`nvidia-smi --query-gpu=... -lms N` parsed by `read_nvidia_smi` (what each SLURM telemetry step's output goes
through; here nvidia-smi runs as a plain subprocess, since this machine has no SLURM).

    python3 benchmarks/gpu_sampler_proof.py [--sizes 4 16 40] [--csv gpu.csv]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from pytest_llama4.measure.telemetry import GpuMonitor, GpuSample, NvmlSource, nvidia_smi_query, read_nvidia_smi

TOLERANCE = 0.02
SETTLE_S = 0.5  # samples this soon after a change may predate it
HOLD_S = 3.0
NVML_INTERVAL_S = 0.1
SMI_INTERVAL_MS = 200

# The allocating process: told when to allocate and free over stdin, it answers when done over stdout.
CHILD = """
import sys, torch
torch.zeros(1, device="cuda"); torch.cuda.synchronize()  # CUDA context first: part of the baseline
print("ready", flush=True); sys.stdin.readline()
held = torch.empty(int(sys.argv[1]) * 2**30, dtype=torch.uint8, device="cuda"); torch.cuda.synchronize()
print("allocated", torch.cuda.memory_reserved(), flush=True); sys.stdin.readline()
del held; torch.cuda.empty_cache(); torch.cuda.synchronize()
print("freed", flush=True); sys.stdin.readline()
"""


class NvidiaSmiProcess:
    """nvidia-smi -lms as a plain subprocess, its output read by the SLURM source's reader (no srun here)."""

    def __init__(self, interval_ms: int, node: str) -> None:
        self.argv = nvidia_smi_query(interval_ms)
        self.node = node
        self.unparsed: list[str] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self, emit) -> None:
        self._process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._reader = threading.Thread(target=read_nvidia_smi, args=(self._process.stdout,),
                                        kwargs={"node": self.node, "emit": emit, "unparsed": self.unparsed.append})
        self._reader.start()

    def stop(self) -> None:
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait()
            self._reader.join()
            self._process = None

    def failure(self) -> Exception | None:
        return None


def run_size(gib: int, monitor: GpuMonitor) -> dict[str, float]:
    """One allocation of `gib` GiB; the phase boundaries, as unix times."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(gib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)

    def step(answer: str, then: str | None) -> float:
        line = child.stdout.readline()
        assert line.startswith(answer), f"child said {line!r}, expected {answer!r}"
        at = time.time()
        time.sleep(HOLD_S if answer == "allocated" else SETTLE_S + 1.5)
        if then is not None:
            child.stdin.write(then + "\n")
            child.stdin.flush()
        return at

    marks = {"ready": step("ready", "allocate")}
    marks["asked"] = time.time()
    marks["allocated"] = step("allocated", "free")
    marks["asked_free"] = time.time()
    marks["freed"] = step("freed", "exit")
    marks["end"] = time.time()
    child.wait(timeout=30)
    return marks


def median_used(samples: list[GpuSample], node: str, start: float, end: float) -> tuple[float, int]:
    values = [s.memory_used_mib for s in samples if s.node == node and start <= s.time <= end and s.gpu == 0]
    assert values, f"no {node} samples between {start:.3f} and {end:.3f}"
    return statistics.median(values), len(values)


def report(gib: int, marks: dict[str, float], samples: list[GpuSample], node: str) -> bool:
    baseline, n_base = median_used(samples, node, marks["ready"] + SETTLE_S, marks["asked"])
    held, n_held = median_used(samples, node, marks["allocated"] + SETTLE_S, marks["asked_free"])
    after, n_after = median_used(samples, node, marks["freed"] + SETTLE_S, marks["end"])
    expected = gib * 1024
    delta = held - baseline
    error = (delta - expected) / expected
    ok = abs(error) <= TOLERANCE and abs(after - baseline) <= 0.01 * expected
    print(f"{node:>10} {gib:>4} GiB  expected {expected:>8.1f} MiB  baseline {baseline:>9.1f} ({n_base:>2})  "
          f"held {held:>9.1f} ({n_held:>2})  delta {delta:>8.1f} MiB  error {error:+.3%}  "
          f"after free {after - baseline:+7.1f} MiB ({n_after:>2})  {'PASS' if ok else 'FAIL'}")
    return ok


def describe_machine() -> None:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout.strip()
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"GPU 0: {smi.splitlines()[0]}")
    print(f"python {platform.python_version()}, torch {torch_version} (version, CUDA)")
    print(f"sources: NVML every {NVML_INTERVAL_S * 1000:g} ms; `{' '.join(nvidia_smi_query(SMI_INTERVAL_MS))}`")
    print(f"each size: baseline after the CUDA context, {HOLD_S:g} s held, then freed; medians of the samples "
          f"from {SETTLE_S:g} s after each change; pass = |error| <= {TOLERANCE:.0%} and memory back after the free\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 40], help="GiB to allocate, one run each")
    parser.add_argument("--csv", type=Path, help="also write the samples here (gpu.csv format)")
    args = parser.parse_args()
    describe_machine()
    smi = NvidiaSmiProcess(SMI_INTERVAL_MS, node="nvidia-smi")
    ok = True
    with GpuMonitor([NvmlSource(NVML_INTERVAL_S, node="nvml"), smi], args.csv) as monitor:
        runs = [(gib, run_size(gib, monitor)) for gib in args.sizes]
    for gib, marks in runs:
        for node in ("nvml", "nvidia-smi"):
            ok &= report(gib, marks, monitor.samples, node)
    counts = {node: sum(1 for s in monitor.samples if s.node == node) for node in ("nvml", "nvidia-smi")}
    print(f"\nsamples: {counts}; nvidia-smi lines not parsed: {smi.unparsed or 'none'}")
    peaks = monitor.peak_used_mib()
    print("peak_used_mib():", {f"{node}/gpu{gpu}": round(mib, 1) for (node, gpu), mib in sorted(peaks.items())})
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
