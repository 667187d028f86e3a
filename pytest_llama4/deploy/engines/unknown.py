"""An --endpoint whose engine was not named: any healthy OpenAI server. Nothing engine-specific applies to it: no
waivers, no skips for an engine's quirks; it is held to the OpenAI contract (temperature 0 is greedy, stop strings
stop), and counters it happens to publish are read where it publishes them. `detect.py` says what it looks like."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ...config.topology import Plan, Service
from .base import Wiring
from .control_plane import Discovery

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ..launchers.base import Launcher

NAME = "unknown"


class UnknownEngine:
    name = NAME
    needs_gpus = False
    launchers = ()  # only ever tested at an --endpoint
    runs_dynamo = False
    config_format = "llm-api-yaml"  # an engine config given for it is linted as the seed's engines read theirs
    deterministic_text = True  # the OpenAI contract: temperature 0 is greedy
    drafts_tokens = True  # if it publishes draft counters, they are read; if not, the test says which it looked for
    publishes_kv_usage = False
    default_profile = None
    default_startup_timeout = 120.0  # it is up already: readiness only
    writes_engine_configs = False
    serves_model_path = False

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        return {}

    def lists_models(self, plan: Plan | None) -> bool:
        return True

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        return None

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        return None

    def check(self, settings: Settings) -> None:
        if settings.launches:
            raise pytest.UsageError(f"--engine={NAME} names a server pytest-llama4 did not start: use it with "
                                    "--endpoint=URL, or name the engine to launch (--engine=mocker, ...)")

    def default_engine_config(self, service: Service) -> Path | None:
        return None

    def default_model(self) -> Path | None:
        return None

    def python(self, settings: Settings) -> str:
        return "python3"

    def release_uses(self, dynamo_version: str) -> str:
        return "nothing: the engine is unknown"

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        return f"an --endpoint is tested as it is: nothing is launched for --engine={NAME}"

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery | None,
             configs_dir: Path, wiring: Wiring) -> None:
        raise NotImplementedError(f"--engine={NAME} is never launched")  # check() refuses it first


ENGINE = UnknownEngine()
