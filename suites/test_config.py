"""Engine configs, checked before the deployment starts: every key one its engine knows, prefill and decode in
agreement, the seed's known out-of-memory value. Without an image no test here asks for the deployment, and this
file sorts first, so a typo fails in seconds instead of after a model load. With an image the keys are judged by the
container's own TensorRT-LLM: the engine-config test waits for preflight's verdict (preflight runs before any model
loads and stops the launch on a key the container rejects). Warnings are reported, never failed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pytest_llama4.config import lint as config_lint
from pytest_llama4.config.settings import Settings
from pytest_llama4.config.topology import WORKER, Service

pytestmark = pytest.mark.config

FLAGS = {"agg": "--engine-config", "prefill": "--prefill-engine-config", "decode": "--decode-engine-config"}


def configured(settings: Settings, role: str) -> Path | None:
    """The role's engine config as given (a container path with an image)."""
    return {"agg": settings.engine_config, "prefill": settings.prefill_engine_config,
            "decode": settings.decode_engine_config}[role]


def config_for(settings: Settings, engine, role: str) -> Path:
    """The role's engine config as a file on this machine; skips when there is none to read."""
    given = configured(settings, role)
    if given is None:
        default = engine.default_engine_config(Service(WORKER if role == "agg" else role, 0, node=0))
        if default is None:
            pytest.skip(f"no {role} engine config given ({FLAGS[role]}): nothing to lint")
        return default
    on_host = settings.on_host(given)  # a container path is read on the host through the mounts
    if on_host is None:
        pytest.skip(f"{given} comes from the image {settings.image}: no mount makes it readable here")
    return on_host


def check(findings: list[config_lint.Finding], what: str, record_testsuite_property, keys: str | None = None) -> None:
    """Warnings go to pytest's warning summary and the JUnit report; errors fail the test, one line each."""
    found_warnings = [f for f in findings if f.severity == "warning"]
    for finding in found_warnings:
        warnings.warn(str(finding), config_lint.EngineConfigWarning, stacklevel=2)
    if found_warnings:
        record_testsuite_property(f"{what}_warnings", "; ".join(str(f) for f in found_warnings))
    found_errors = config_lint.errors(findings)
    if found_errors:
        lines = "\n".join(f"  {f}" for f in found_errors)
        pytest.fail(f"{what}: {len(found_errors)} error(s)\n{lines}\n(keys: {keys or config_lint.known_keys().source})",
                    pytrace=False)


def test_engine_config(llama4_settings: Settings, llama4_engine, config_role: str, record_testsuite_property,
                       container_key_verdicts) -> None:
    """The role's engine config parses, and every key (nested ones too) is one its engine takes (one test per worker
    role of the run's topology): the container's TensorRT-LLM decides where preflight asked it."""
    path = config_for(llama4_settings, llama4_engine, config_role)
    findings = config_lint.lint_engine_config(path, config_role, llama4_engine.config_format)
    verdict = container_key_verdicts.get(str(configured(llama4_settings, config_role)))
    if verdict is not None:
        findings = config_lint.judged_by_container(findings, path, verdict)
        keys = f"{verdict['validator']} in the container (preflight's TorchLlmArgs)"
    elif llama4_engine.config_format == config_lint.MOCKER_JSON and path.suffix == ".json":
        mocker = config_lint.mocker_keys()
        keys = mocker.source if mocker else "dynamo.mocker not installed"
    else:
        keys = config_lint.known_keys().source
    record_testsuite_property("engine_config_keys", keys)
    check(findings, f"{config_role}_engine_config", record_testsuite_property, keys)


def test_prefill_and_decode_agree(llama4_settings: Settings, llama4_engine, record_testsuite_property) -> None:
    """Speculative config, model and cache transceiver backend are the same on both sides of the KV transfer."""
    if llama4_settings.topology != "disagg":
        pytest.skip("agg: one engine config, nothing to compare")
    if llama4_engine.config_format == config_lint.MOCKER_JSON:
        pytest.skip("the mocker's engine args have no speculative config or KV transfer backend to agree on")
    prefill = config_for(llama4_settings, llama4_engine, "prefill")
    decode = config_for(llama4_settings, llama4_engine, "decode")
    check(config_lint.lint_pair(prefill, decode), "prefill_decode", record_testsuite_property)
