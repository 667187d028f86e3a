"""Engine configs, checked before the deployment starts: every key one its engine knows, prefill and decode in
agreement, the seed's known out-of-memory value. No test here asks for the deployment, and this file sorts first,
so a typo fails in seconds instead of after a model load. Warnings are reported, never failed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pytest_llama4.config import lint as config_lint
from pytest_llama4.config.settings import Settings, host_path
from pytest_llama4.config.topology import WORKER, Service
from pytest_llama4.deploy.engines.dynamo_mocker import default_engine_config
from pytest_llama4.plugin.session import current_run

pytestmark = pytest.mark.config

FLAGS = {"agg": "--engine-config", "prefill": "--prefill-engine-config", "decode": "--decode-engine-config"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per worker role of the run's topology."""
    if "role" in metafunc.fixturenames:
        topology = current_run(metafunc.config).settings.topology
        metafunc.parametrize("role", ("agg",) if topology == "agg" else ("prefill", "decode"))


def config_for(settings: Settings, role: str) -> Path:
    """The role's engine config as a file on this machine; skips when there is none to read."""
    configured = {"agg": settings.engine_config, "prefill": settings.prefill_engine_config,
                  "decode": settings.decode_engine_config}[role]
    if configured is None:
        default = default_engine_config(Service(WORKER if role == "agg" else role, 0, node=0)) \
            if settings.engine == "mocker" else None
        if default is None:
            pytest.skip(f"no {role} engine config given ({FLAGS[role]}): nothing to lint")
        return default
    if settings.image:  # a container path: read it on the host through the mounts
        on_host = host_path(configured, settings.mounts)
        if on_host is None:
            pytest.skip(f"{configured} comes from the image {settings.image}: no mount makes it readable here")
        return on_host
    return configured


def check(findings: list[config_lint.Finding], what: str, record_testsuite_property) -> None:
    """Warnings go to pytest's warning summary and the JUnit report; errors fail the test, one line each."""
    found_warnings = [f for f in findings if f.severity == "warning"]
    for finding in found_warnings:
        warnings.warn(str(finding), config_lint.EngineConfigWarning, stacklevel=2)
    if found_warnings:
        record_testsuite_property(f"{what}_warnings", "; ".join(str(f) for f in found_warnings))
    found_errors = config_lint.errors(findings)
    if found_errors:
        lines = "\n".join(f"  {f}" for f in found_errors)
        pytest.fail(f"{what}: {len(found_errors)} error(s)\n{lines}\n(keys: {config_lint.known_keys().source})",
                    pytrace=False)


def test_engine_config(llama4_settings: Settings, role: str, record_testsuite_property) -> None:
    """The role's engine config parses, and every key (nested ones too) is one its engine takes."""
    path = config_for(llama4_settings, role)
    findings = config_lint.lint_engine_config(path, role, llama4_settings.engine)
    if llama4_settings.engine == "mocker" and path.suffix == ".json":
        keys = config_lint.mocker_keys()
        record_testsuite_property("engine_config_keys", keys.source if keys else "dynamo.mocker not installed")
    else:
        record_testsuite_property("engine_config_keys", config_lint.known_keys().source)
    check(findings, f"{role}_engine_config", record_testsuite_property)


def test_prefill_and_decode_agree(llama4_settings: Settings, record_testsuite_property) -> None:
    """Speculative config, model and cache transceiver backend are the same on both sides of the KV transfer."""
    if llama4_settings.topology != "disagg":
        pytest.skip("agg: one engine config, nothing to compare")
    if llama4_settings.engine == "mocker":
        pytest.skip("the mocker's engine args have no speculative config or KV transfer backend to agree on")
    prefill, decode = config_for(llama4_settings, "prefill"), config_for(llama4_settings, "decode")
    check(config_lint.lint_pair(prefill, decode), "prefill_decode", record_testsuite_property)
