"""The embedded default: the real Dynamo frontend in front of the real `dynamo.mocker` engine.

Runs as local processes or as SLURM steps; every process gets the deployment's discovery wiring
(a shared `DYN_FILE_KV` directory, or etcd + NATS on the head node).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ...config.paths import ENGINE_CONFIGS_DIR
from ...config.topology import DECODE, PREFILL, Service
from .base import Command
from .control_plane import Discovery

MOCKER_CONFIGS = ENGINE_CONFIGS_DIR / "mocker"
# Dynamo components a worker registers under, as listed by the frontend's /health.
HEALTH_COMPONENT = {PREFILL: "prefill", DECODE: "backend", "worker": "backend"}
# The fixture model's context length; prompts beyond it must be rejected with a 400, as a real engine does.
MAX_MODEL_LEN = 8192


def frontend_command(host: str, http_port: int, discovery: Discovery) -> Command:
    argv = (sys.executable, "-m", "dynamo.frontend", "--http-host", host, "--http-port", str(http_port),
            *discovery.flags)
    return Command(argv, dict(discovery.env))


WORKER_TYPE = {"worker": "aggregated", PREFILL: "prefill", DECODE: "decode"}


def default_engine_config(service: Service) -> Path | None:
    """The shipped mocker config for this role, if there is one."""
    path = MOCKER_CONFIGS / f"mocker_{'agg' if service.role == 'worker' else service.role}.json"
    return path if path.is_file() else None


def engine_args(service: Service, speedup_ratio: float) -> dict:
    """The complete mocker engine args for a worker.

    With `--extra-engine-args` the mocker takes every engine setting from the file and ignores its other
    flags (ai-dynamo 1.4.2), so the run's speed-up and the role's worker type are merged into the file.
    The file is flat in 1.4.2 (1.6 nests it under "engine").
    """
    config = service.engine_config or default_engine_config(service)
    base = json.loads(config.read_text()) if config else {}
    return {"max_model_len": MAX_MODEL_LEN, **base, "worker_type": WORKER_TYPE[service.role],
            "speedup_ratio": speedup_ratio}


def worker_command(
    service: Service,
    *,
    model_path: Path,
    served_model_name: str,
    engine_args_file: Path,
    system_port: int,
    discovery: Discovery,
) -> Command:
    """`DYN_SYSTEM_PORT` makes the worker serve its own model card, so the frontend never asks a hub for it."""
    argv = [sys.executable, "-m", "dynamo.mocker", "--model-path", str(model_path),
            "--model-name", served_model_name, "--extra-engine-args", str(engine_args_file), *discovery.flags]
    if service.role in (PREFILL, DECODE):
        argv += ["--disaggregation-mode", service.role]  # picks the endpoint; the engine follows worker_type
    env = {**discovery.env, "DYN_SYSTEM_PORT": str(system_port)}
    return Command(tuple(argv), env)
