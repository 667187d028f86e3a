"""Resolving a run's settings: from the command line, environment and ini (`resolve`), or, with `--replay`, from
what an earlier run recorded in reports/<run-id>/settings.json, every input file taken from the report's copy once
its sha256 matches. The recording side is `report/replay.py`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from .settings import OPTIONS, Settings, default_source, parse, raw_value, validate

SETTINGS_FILE = "settings.json"
INPUTS_DIR = "inputs"
OUTCOMES_FILE = "outcomes.json"
# How a run is driven, not what it tests: a replay takes these from its own command line (or their defaults).
RUN_CONTROL = ("replay", "replay_failed", "reports_dir", "keep_deployment", "dry_run")
NOT_RECORDED = ("replay", "replay_failed")  # how this run was started: settings.json says replay_of instead
ROLE_SETTING = {"worker": "engine_config", "prefill": "prefill_engine_config", "decode": "decode_engine_config"}
FAILED = ("failed", "error")
INPUT_SETTINGS = (*ROLE_SETTING.values(), "profile_file", "waivers", "baseline", "golden_file")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(directory: Path) -> dict[str, Any]:
    """A run's settings.json; a missing or damaged one is a usage error that says how to go on."""
    path = directory / SETTINGS_FILE
    if not directory.is_dir():
        raise pytest.UsageError(f"--replay={directory}: no such directory; pass the report directory of an earlier "
                                "run, reports/<run-id>")
    if not path.is_file():
        raise pytest.UsageError(f"--replay={directory}: {SETTINGS_FILE} is missing, so that run's settings are "
                                "unknown; pass reports/<run-id> of a run that recorded them (pytest-llama4 writes "
                                "it at the start of every run), or run without --replay")
    try:
        data = json.loads(path.read_text())
        problem = None if _well_formed(data) else "run_id, settings or inputs missing or malformed"
    except (OSError, UnicodeDecodeError, ValueError) as error:
        data, problem = None, f"{type(error).__name__}: {error}"
    if problem:
        raise pytest.UsageError(f"--replay: {path} is damaged ({problem}); restore it from a copy of the report, or "
                                "run without --replay")
    return data


def _well_formed(data: Any) -> bool:
    entry_keys = {"read", "copy", "sha256"}
    return (isinstance(data, dict) and isinstance(data.get("run_id"), str) and isinstance(data.get("settings"), dict)
            and isinstance(data.get("inputs"), dict)
            and all(isinstance(e, dict) and entry_keys <= e.keys() for e in data["inputs"].values()))


def recorded_run_id(directory: Path) -> str:
    return str(load(directory)["run_id"])


def recorded_values(config: pytest.Config, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """--replay DIR: the raw setting values of that run, its inputs from the report's copies; RUN_CONTROL values
    from this command line. Returns (values, sources) for settings.validate."""
    directory = Path(config.invocation_params.dir) / Path(values["replay"]).expanduser()
    _refuse_other_settings(config, directory)
    data = load(directory)
    expected = {f.name for f in dataclasses.fields(Settings)} - set(NOT_RECORDED)
    if set(data["settings"]) != expected:
        differ = sorted(set(data["settings"]) ^ expected)
        raise pytest.UsageError(f"--replay: {directory / SETTINGS_FILE} was written by another pytest-llama4 version "
                                f"(settings differ: {', '.join(differ)}); replay it with that version, or run "
                                "without --replay")
    replayed = {**data["settings"], **{name: values[name] for name in RUN_CONTROL}}
    for name, entry in data["inputs"].items():
        replayed[name] = verified_input(directory, data["run_id"], name, entry)
    source = f"{directory / SETTINGS_FILE}"
    return replayed, {name: f"{source} ({name})" for name in replayed}


def _refuse_other_settings(config: pytest.Config, directory: Path) -> None:
    given = [o.flag for o in OPTIONS if o.dest not in RUN_CONTROL and config.getoption(o.dest) is not None]
    if given:
        raise pytest.UsageError(
            f"--replay={directory} runs exactly the settings of that run, but the command line also sets "
            f"{', '.join(given)}: drop them (to change settings, run without --replay; "
            f"with --replay only {', '.join('--' + n.replace('_', '-') for n in RUN_CONTROL[1:])} may be given)")


def verified_input(directory: Path, run_id: str, name: str, entry: dict[str, str]) -> str:
    """The path the replay reads `name` from: the report's copy, once it matches the sha256 recorded with it."""
    copy = directory / entry["copy"]
    if not copy.is_file():
        raise pytest.UsageError(f"--replay: {copy}, the report's copy of {name} ({entry['read']}), is missing; "
                                "restore it, or run without --replay")
    if sha256_of(copy) != entry["sha256"]:
        raise pytest.UsageError(f"--replay: {copy} was changed after run {run_id} (its sha256 no longer matches "
                                f"{directory / SETTINGS_FILE}); restore it, or run without --replay")
    if "container_path" not in entry:
        return str(copy)
    mounted = Path(entry["read"])  # the container reads it through MOUNTS: the copy cannot stand in for it
    if not mounted.is_file() or sha256_of(mounted) != entry["sha256"]:
        raise pytest.UsageError(f"--replay: {name} {entry['container_path']} (on the host {mounted}, via MOUNTS) "
                                f"changed since run {run_id}, and the container reads it through the mount; restore "
                                f"it with `cp {copy} {mounted}`")
    return entry["container_path"]




def resolve(config: pytest.Config, environ: dict[str, str] | None = None) -> Settings:
    """Build and validate the run's Settings."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw, source = raw_value(config, option, environ)
        values[option.dest] = parse(option, raw, source)
        sources[option.dest] = source
    if values["replay"]:
        values, sources = recorded_values(config, values)
    return validate(values, sources, Path(config.invocation_params.dir))


def declared(config: pytest.Config, name: str, environ: dict[str, str] | None = None) -> Any:
    """A setting as the user gave it (option, environment variable or ini key, by the same precedence as
    `resolve`); None when it is only the default."""
    option = next(o for o in OPTIONS if o.dest == name)
    raw, source = raw_value(config, option, dict(os.environ if environ is None else environ))
    return None if source == default_source(option) else raw
