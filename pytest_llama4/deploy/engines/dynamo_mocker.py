"""The embedded default: the real Dynamo frontend in front of the real `dynamo.mocker` engine.

Runs as local processes or as SLURM steps; every process gets the deployment's discovery wiring
(a shared `DYN_FILE_KV` directory, or etcd + NATS on the head node).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.paths import ENGINE_CONFIGS_DIR
from ...config.topology import DECODE, PREFILL, Plan, Service
from ..fixture_model import ensure_model_dir
from .base import Command, Wiring
from .control_plane import HEALTH_COMPONENTS, Discovery, preflight_note
from .dynamo_releases import MOCKER_LAUNCH_KEYS, release

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ..launchers.base import Launcher

MOCKER_CONFIGS = ENGINE_CONFIGS_DIR / "mocker"
# The fixture model's context length; prompts beyond it must be rejected with a 400, as a real engine does.
MAX_MODEL_LEN = 8192


def frontend_command(python: str, host: str, http_port: int, discovery: Discovery) -> Command:
    argv = (python, "-m", "dynamo.frontend", "--http-host", host, "--http-port", str(http_port),
            *discovery.flags)
    return Command(argv, dict(discovery.env))


WORKER_TYPE = {"worker": "aggregated", PREFILL: "prefill", DECODE: "decode"}


def default_engine_config(service: Service) -> Path | None:
    """The shipped mocker config for this role, if there is one."""
    path = MOCKER_CONFIGS / f"mocker_{'agg' if service.role == 'worker' else service.role}.json"
    return path if path.is_file() else None


def engine_args(service: Service, speedup_ratio: float) -> dict:
    """The complete mocker engine args for a worker, flat (`layout` writes them as a release reads them).

    With `--extra-engine-args` the mocker takes every engine setting from the file and ignores its other
    flags (ai-dynamo 1.4.2), so the run's speed-up and the role's worker type are merged into the file.
    A config in either release's layout is accepted.
    """
    config = service.engine_config or default_engine_config(service)
    return {"max_model_len": MAX_MODEL_LEN, **(read_engine_args(config) if config else {}),
            "worker_type": WORKER_TYPE[service.role], "speedup_ratio": speedup_ratio}


def read_engine_args(path: Path) -> dict:
    """A mocker engine-args file in either release's layout (see `layout`), flat. ValueError if it is not an
    object."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: mocker engine args must be a JSON object")
    engine = data.pop("engine", {})
    return {**engine, **data} if isinstance(engine, dict) else data


@functools.cache
def installed_release(python: str) -> str | None:
    """The ai-dynamo release `python` runs: a local mocker's own, known before (and without) preflight."""
    if python == sys.executable:
        try:
            return importlib.metadata.version("ai-dynamo")
        except importlib.metadata.PackageNotFoundError:
            return None
    try:
        done = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('ai-dynamo'))"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def layout(args: Mapping, dynamo_version: str) -> dict:
    """Engine args as the release's mocker reads its file: flat before Dynamo 1.6; from 1.6 the engine's settings
    nest under "engine", beside the launch keys (a flat file is rejected there)."""
    if not release(dynamo_version).mocker_args_nested:
        return dict(args)
    launch_keys = (*MOCKER_LAUNCH_KEYS, "dynamo")
    return {**{k: args[k] for k in launch_keys if k in args},
            "engine": {k: v for k, v in args.items() if k not in launch_keys}}


def worker_command(
    service: Service,
    *,
    python: str,
    model_path: Path,
    served_model_name: str,
    engine_args_file: Path,
    system_port: int,
    discovery: Discovery,
) -> Command:
    """`DYN_SYSTEM_PORT` makes the worker serve its own model card, so the frontend never asks a hub for it."""
    argv = [python, "-m", "dynamo.mocker", "--model-path", str(model_path),
            "--model-name", served_model_name, "--extra-engine-args", str(engine_args_file), *discovery.flags]
    if service.role in (PREFILL, DECODE):
        argv += ["--disaggregation-mode", service.role]  # picks the endpoint; the engine follows worker_type
    env = {**discovery.env, "DYN_SYSTEM_PORT": str(system_port)}
    return Command(tuple(argv), env)


class MockerEngine:
    """The embedded default: no GPU, local processes or SLURM steps, Dynamo discovery."""

    name = "mocker"
    needs_gpus = False
    launchers = ("local", "slurm")
    runs_dynamo = True
    config_format = "mocker-json"
    deterministic_text = False  # random token ids
    drafts_tokens = False  # --decode-speedup-ratio simulates speculative decoding's speed, not its drafts
    publishes_kv_usage = True
    default_profile = "cpu-mocker"
    default_startup_timeout = 120.0  # it loads a tokenizer, not weights: seconds
    writes_engine_configs = True  # the run's speed-up and worker type merged into each worker's args
    serves_model_path = False

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        return HEALTH_COMPONENTS  # the mocker registers as the current trtllm worker does, in every release it has

    def lists_models(self, plan: Plan | None) -> bool:
        return True

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        return "the mocker drafts no tokens: it only simulates speculative decoding's speed"

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        return None  # never asked: the mocker drafts no tokens

    def check(self, settings: Settings) -> None:
        """Everything the mocker needs has a default."""

    def default_engine_config(self, service: Service) -> Path | None:
        return default_engine_config(service)

    def default_model(self) -> Path | None:
        return ensure_model_dir()

    def python(self, settings: Settings) -> str:
        return "python3" if settings.image else settings.engine_python or sys.executable

    def release_uses(self, dynamo_version: str) -> str:
        layout = "nested" if release(dynamo_version).mocker_args_nested else "flat"
        return f"the mockers' engine-args files are written in its ({layout}) layout"

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        return preflight_note()

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery | None,
             configs_dir: Path, wiring: Wiring) -> None:
        """Every worker reads a complete engine-args file written here (with the run's speed-up merged in)."""
        assert discovery is not None  # runs_dynamo: the wiring made one
        python = self.python(settings)
        version = (None if settings.image else installed_release(python)) or settings.dynamo_version
        wiring.commands[plan.frontend] = frontend_command(python, launcher.host, http_port, discovery)
        wiring.listen(plan.frontend, http_port)
        model_path = Path(settings.model) if settings.model else ensure_model_dir()
        wiring.model = str(model_path)
        configs_dir.mkdir(parents=True, exist_ok=True)
        for worker in plan.workers:
            engine_args_file = configs_dir / f"{worker.name}.json"
            args = layout(engine_args(worker, settings.speedup_ratio), version)
            engine_args_file.write_text(json.dumps(args, indent=2))
            wiring.engine_configs[worker] = str(engine_args_file)
            wiring.commands[worker] = worker_command(
                worker, python=python, model_path=model_path, served_model_name=settings.served_model_name,
                engine_args_file=engine_args_file, system_port=wiring.port_for(worker, launcher), discovery=discovery)


ENGINE = MockerEngine()
