"""The SLURM allocation a deployment runs in: the one pytest runs inside, or one requested with salloc."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

SLURM_TIMEOUT = 30.0


class SlurmError(Exception):
    """A SLURM command failed; the message holds the command and what it printed."""


def slurm(*argv: str, timeout: float = SLURM_TIMEOUT) -> str:
    """Run a SLURM client command and return its stdout; any failure is a SlurmError that says what ran."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SlurmError(f"`{argv[0]}` not found: --launcher=slurm needs the SLURM client tools on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv)}` did not answer within {timeout:g}s") from None
    if done.returncode != 0:
        raise SlurmError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class Allocation:
    job_id: str
    nodes: tuple[str, ...]
    requested: bool = False  # we asked for it, so we release it

    def address(self, node: str) -> str:
        """The address other nodes reach `node` at, as SLURM knows it (NodeAddr): never 'localhost'."""
        match = re.search(r"\bNodeAddr=(\S+)", slurm("scontrol", "show", "node", "-o", node))
        return match.group(1) if match else node

    def gpus(self, node: str) -> int | None:
        return gres_gpus(slurm("scontrol", "show", "node", "-o", node))

    def release(self) -> None:
        if self.requested:
            slurm("scancel", self.job_id)

    def describe(self) -> str:
        return f"job {self.job_id} ({', '.join(self.nodes)})"


def gres_gpus(node_record: str) -> int | None:
    """GPUs in a `scontrol show node -o` record (Gres=gpu[:type]:N[(S:...)],...), or None when it lists none."""
    gres = re.search(r"\bGres=(\S+)", node_record)
    counts = re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres.group(1)) if gres else []
    return sum(map(int, counts)) if counts else None


def hostnames(nodelist: str) -> tuple[str, ...]:
    return tuple(slurm("scontrol", "show", "hostnames", nodelist).split())


def current(environ: Mapping[str, str]) -> Allocation | None:
    """The allocation pytest runs inside (salloc / sbatch), if any."""
    job_id = environ.get("SLURM_JOB_ID")
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not job_id or not nodelist:
        return None
    return Allocation(job_id, hostnames(nodelist))


def request(nodes: int, *, name: str, partition: str | None, account: str | None, time_limit: str,
            wait: float = 600.0) -> Allocation:
    """salloc --no-shell: the allocation outlives the command until we scancel it."""
    argv = ["salloc", "--no-shell", f"--nodes={nodes}", f"--job-name={name}", f"--time={time_limit}"]
    argv += [f"--partition={partition}"] if partition else []
    argv += [f"--account={account}"] if account else []
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=wait, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv)}` was not granted within {wait:g}s") from None
    granted = re.search(r"Granted job allocation (\d+)", done.stderr + done.stdout)
    if done.returncode != 0 or not granted:
        raise SlurmError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    job_id = granted.group(1)
    deadline = time.monotonic() + SLURM_TIMEOUT
    while not (nodelist := slurm("squeue", "-h", "-j", job_id, "-o", "%N").strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return Allocation(job_id, hostnames(nodelist), requested=True)


def check_fits(allocation: Allocation, needed: int, topology: str, gpus_per_node: int | None) -> None:
    """Refuse, before anything launches, an allocation too small for the plan."""
    if len(allocation.nodes) < needed:
        counts = ("NUM_NODES (--num-nodes)" if topology == "agg" else
                  "NUM_PREFILL_NODES x prefill workers + NUM_DECODE_NODES x decode workers "
                  "(--prefill-nodes, --prefill-workers, --decode-nodes, --decode-workers)")
        raise pytest.UsageError(
            f"--topology={topology} needs {needed} node(s) from {counts}, but allocation "
            f"{allocation.describe()} has {len(allocation.nodes)}: run pytest inside `salloc -N{needed}`, "
            "pass --slurm-alloc to request one, or lower those counts")
    if gpus_per_node is None:
        return
    for node in allocation.nodes[:needed]:
        found = allocation.gpus(node)
        if found is not None and found < gpus_per_node:
            raise pytest.UsageError(
                f"NUM_GPUS_PER_NODE (--gpus-per-node) is {gpus_per_node}, but node {node} of allocation "
                f"{allocation.job_id} has {found} GPU(s): request nodes with `--gpus-per-node={gpus_per_node}` "
                "or lower NUM_GPUS_PER_NODE")
