"""The engines, by --engine name. Adding one: its own file (a class implementing `base.Engine`, and `ENGINE`) and one
line in `ENGINES` here."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING

import pytest

from . import dynamo_mocker, dynamo_trtllm, trtllm_serve, unknown, vllm_serve
from .base import Engine

if TYPE_CHECKING:
    from ...config.settings import Settings

ENGINES: dict[str, Engine] = {e.name: e for e in (
    dynamo_mocker.ENGINE,
    dynamo_trtllm.ENGINE,
    trtllm_serve.ENGINE,
    vllm_serve.ENGINE,
    unknown.ENGINE,
)}


def engine_for(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise pytest.UsageError(f"--engine: unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None


def waived_engine(named: str, detected: str | None) -> str:
    """The engine whose known deviations apply: the one named, or for an unnamed --endpoint the one it certainly
    says it is (deploy/detect.py)."""
    return detected if named == unknown.NAME and detected in ENGINES else named


def settle(settings: Settings, given: Collection[str] = ()) -> Settings:
    """The engine's part of validating settings: what it can be launched by, what it needs, its defaults (the
    profile; the startup budget unless `given`, the settings the user gave). An --endpoint without --engine is an
    unknown engine: nothing engine-specific applies to it. Every problem is a pytest.UsageError that says how to
    fix it."""
    if not settings.launches and "engine" not in given:
        settings = dataclasses.replace(settings, engine=unknown.NAME)
    engine = engine_for(settings.engine)
    _check_launcher(engine, settings)
    if settings.engine_python and engine.needs_gpus:
        raise pytest.UsageError(f"--engine-python picks the Python that runs a CPU engine outside an image; "
                                f"--engine={engine.name} runs the Python of the nodes' image: drop --engine-python")
    engine.check(settings)
    defaults: dict[str, object] = {}
    if settings.profile is None and settings.profile_file is None and engine.default_profile:
        defaults["profile"] = engine.default_profile
    if "startup_timeout" not in given:
        defaults["startup_timeout"] = engine.default_startup_timeout
    if engine.serves_model_path and settings.launches and settings.model:
        if "served_model_name" in given and settings.served_model_name != settings.model:
            raise pytest.UsageError(f"--engine={engine.name} serves the model under its path {settings.model} (it has "
                                    "no served-model-name option): drop --served-model-name, or set it to --model")
        defaults["served_model_name"] = settings.model
    return dataclasses.replace(settings, **defaults) if defaults else settings


def _check_launcher(engine: Engine, settings: Settings) -> None:
    if settings.launcher == "local" and "local" not in engine.launchers:
        raise pytest.UsageError(
            f"--engine={engine.name} needs GPU nodes and cannot run as local processes; use --engine=mocker "
            "for the embedded default, or --endpoint=URL for a deployment that is already running")
    if settings.launcher == "slurm" and "slurm" not in engine.launchers and not settings.dry_run:
        raise pytest.UsageError(f"--engine={engine.name} cannot be launched by pytest-llama4 yet: start it with the "
                                "seed guide's command (--dry-run prints it) and pass --endpoint=http://HEAD_NODE:8000 "
                                f"--engine={engine.name}")
