"""The run's service directory, `reports/<run-id>/services.json`: what each launched service is, where it runs,
where its metrics and log are. Written when the deployment is launched; read by suites (under pytest-xdist a worker
sees only the controller's deployment address, never its process handles) and by people reading a report."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "services.json"
# Environment variables whose values never go into a report.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY", re.IGNORECASE)
REDACTED = "<redacted>"


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    role: str
    nodes: tuple[str, ...]  # hostnames (SLURM) or the launcher's host
    address: str  # where other processes reach it
    log: str
    argv: tuple[str, ...]
    env: dict[str, str]  # what the plugin set on top of the launcher's environment, secrets redacted
    system_port: int | None = None  # where its metrics are: a Dynamo worker's DYN_SYSTEM_PORT, a server's own port
    metrics_path: str = "/metrics"  # Prometheus text there (trtllm-serve: /prometheus/metrics)
    pid: int | None = None  # once started: its process here, leader of its own process group (SLURM: its srun)

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.address}:{self.system_port}{self.metrics_path}" if self.system_port else None


def redact(env: dict[str, str]) -> dict[str, str]:
    return {name: REDACTED if SECRET_NAME.search(name) else value for name, value in env.items()}


def write(run_dir: Path, records: list[ServiceRecord]) -> Path:
    path = run_dir / FILE
    path.write_text(json.dumps([asdict(r) for r in records], indent=1))
    return path


def read(run_dir: Path) -> list[ServiceRecord]:
    """The launched services of a run; empty when nothing was launched (an --endpoint run)."""
    path = run_dir / FILE
    if not path.is_file():
        return []
    return [ServiceRecord(**{**entry, "nodes": tuple(entry["nodes"]), "argv": tuple(entry["argv"])})
            for entry in json.loads(path.read_text())]


def of_role(records: list[ServiceRecord], role: str) -> list[ServiceRecord]:
    return [r for r in records if r.role == role]
