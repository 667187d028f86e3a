"""The SLURM allocation a deployment runs in: the one pytest runs inside, or one requested with salloc."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    _addresses: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def address(self, node: str) -> str:
        """The IP address other nodes reach `node` at: SLURM's NodeAddr (on real clusters a hostname), resolved once.
        Services bind it and clients are handed it: etcd and Dynamo take IPs, not names. Never 'localhost'."""
        if node not in self._addresses:
            match = re.search(r"\bNodeAddr=(\S+)", slurm("scontrol", "show", "node", "-o", node))
            self._addresses[node] = resolve_address(node, match.group(1) if match else node)
        return self._addresses[node]

    def addresses(self) -> dict[str, str]:
        """Every node's address: the mapping services.json and provenance record."""
        return {node: self.address(node) for node in self.nodes}

    def gpus(self, node: str) -> int | None:
        return gres_gpus(slurm("scontrol", "show", "node", "-o", node))

    def release(self) -> None:
        if self.requested:
            slurm("scancel", self.job_id)

    def describe(self) -> str:
        return f"job {self.job_id} ({', '.join(self.nodes)})"


def resolve_address(node: str, node_addr: str) -> str:
    """`node_addr` (a NodeAddr) as an IPv4 address, as this machine resolves it; a SlurmError naming the node when it
    does not resolve."""
    try:
        found = socket.getaddrinfo(node_addr, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise SlurmError(f"node {node}: its address {node_addr} (NodeAddr) does not resolve on {socket.gethostname()} "
                         f"({error}); add it to DNS or /etc/hosts, or give the node an IP NodeAddr") from None
    return found[0][4][0]


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


@dataclass(frozen=True)
class AllocationRequest:
    """What --slurm-alloc asks SLURM for."""

    nodes: int
    name: str
    time_limit: str
    partition: str | None = None
    account: str | None = None
    gpus_per_node: int | None = None  # GPU engines: srun gives a step the job's GPUs only where the job asked
    exclusive: bool = False
    segment: int | None = None

    def argv(self) -> list[str]:
        """salloc --no-shell: the allocation outlives the command until we scancel it."""
        argv = ["salloc", "--no-shell", f"--nodes={self.nodes}", f"--job-name={self.name}", f"--time={self.time_limit}"]
        argv += [f"--gpus-per-node={self.gpus_per_node}"] if self.gpus_per_node else []
        argv += ["--exclusive"] if self.exclusive else []
        argv += [f"--segment={self.segment}"] if self.segment else []
        argv += [f"--partition={self.partition}"] if self.partition else []
        argv += [f"--account={self.account}"] if self.account else []
        return argv


def request(wanted: AllocationRequest, wait: float = 600.0) -> Allocation:
    """Ask SLURM for an allocation and wait until it is granted and its nodes are known."""
    argv = wanted.argv()
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
