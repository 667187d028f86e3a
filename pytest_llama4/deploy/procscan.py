"""Find a run's processes on this host by their environment labels and read their resident memory.

Standalone on purpose (standard library only, no package imports): the SLURM side ships this file's source to
each compute node as `python3 -c <source> RUN_ID NODE INTERVAL`, where it prints one JSON line per interval
until its stdin closes. Locally the same `Scanner` is imported.
"""

from __future__ import annotations

import json
import os
import select
import sys

RUN_LABEL_ENV = "PYTEST_LLAMA4_RUN"  # the names launchers/local.py sets; repeated here to stay standalone
SERVICE_LABEL_ENV = "PYTEST_LLAMA4_SERVICE"
NODE_ENV = "SLURMD_NODENAME"  # set by slurmd in every task of a step: which node the task runs on


class Scanner:
    """`scan()` -> [[pid, service, rss_bytes], ...] for the live labelled processes of one run.

    With `node`, only tasks SLURM started on that node count: several "nodes" may share one host (each sees the
    others' processes), and the srun clients on the submit host carry the labels too but are not the service.
    A process's environment is fixed at exec, so each (pid, start time) is classified once and remembered.
    """

    def __init__(self, run_id: str, node: str | None = None, proc: str = "/proc") -> None:
        self.run_label = f"{RUN_LABEL_ENV}={run_id}".encode()
        self.node_label = f"{NODE_ENV}={node}".encode() if node else None
        self.proc = proc
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.known: dict[tuple[str, str], str | None] = {}  # (pid, start time) -> service, or None: not ours

    def scan(self) -> list[list]:
        found, alive = [], set()
        for pid in os.listdir(self.proc):
            if not pid.isdigit():
                continue
            try:
                with open(f"{self.proc}/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                key = (pid, fields[19])  # field 22 of stat, the start time, tells a reused pid apart
                alive.add(key)
                if key not in self.known:
                    self.known[key] = self._service(pid)
                if self.known[key] is None or fields[0] in ("Z", "X"):  # a zombie holds no memory and does no work
                    continue
                with open(f"{self.proc}/{pid}/statm") as statm:
                    rss = int(statm.read().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not ours to read
            found.append([int(pid), self.known[key], rss])
        self.known = {k: v for k, v in self.known.items() if k in alive}
        return found

    def _service(self, pid: str) -> str | None:
        with open(f"{self.proc}/{pid}/environ", "rb") as environ:
            env = environ.read().split(b"\0")
        if self.run_label not in env or (self.node_label is not None and self.node_label not in env):
            return None
        prefix = f"{SERVICE_LABEL_ENV}=".encode()
        return next((e[len(prefix):].decode(errors="replace") for e in env if e.startswith(prefix)), "?")


def stream(run_id: str, node: str, interval: float) -> None:
    """One JSON line per interval on stdout until stdin reaches end of file (the caller closed it)."""
    scanner = Scanner(run_id, node)
    while True:
        sys.stdout.write(json.dumps({"node": node, "procs": scanner.scan()}) + "\n")
        sys.stdout.flush()
        ready = select.select([sys.stdin], [], [], interval)[0]
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return


if __name__ == "__main__":
    stream(sys.argv[1], sys.argv[2], float(sys.argv[3]))
