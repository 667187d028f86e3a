"""Replaying a run: what every run records so that it can be run again exactly, and the replay itself.

Every run records in reports/<run-id>/ (the process that writes junit.xml: pytest itself or the xdist controller):
- `settings.json` at configure time: the settings as resolved, and every input file the run reads (the workers'
  engine configs, the shipped mocker defaults included; the profile, which holds the scenario seeds; waivers;
  baseline; golden file) with where it was read and its sha256;
- `inputs/`: a copy of each of those files;
- `outcomes.json` at the end: every test's outcome, by nodeid relative to the run's rootdir.

`--replay reports/<run-id>` takes every setting from settings.json and every input from the report's copies
(checked against their sha256), so the replay depends neither on the original files nor on this shell's
environment or ini keys. Only RUN_CONTROL options may be given with it; any other setting on the command line is a
usage error. An engine config that the container reads through MOUNTS cannot be swapped for the copy: the mounted
file itself must still match. `--replay-failed` also deselects every test but those that failed or errored there.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ..config.resolve import (
    FAILED,
    INPUT_SETTINGS,
    INPUTS_DIR,
    NOT_RECORDED,
    OUTCOMES_FILE,
    ROLE_SETTING,
    SETTINGS_FILE,
    load,
    sha256_of,
)
from ..config.settings import Settings, host_path
from ..deploy.engines import engine_for

# --- recording --------------------------------------------------------------------------------------------


def input_files(settings: Settings, profile_path: Path | None) -> dict[str, Path]:
    """Setting -> the file it makes the run read, as the run reads it (a container path for a mounted config)."""
    files: dict[str, Path] = {}
    if settings.launches:
        for worker in settings.plan.workers:
            path = worker.engine_config or engine_for(settings.engine).default_engine_config(worker)
            if path is not None:
                files[ROLE_SETTING[worker.role]] = path
    if profile_path is not None:
        files["profile_file"] = profile_path
    files |= {name: getattr(settings, name) for name in ("waivers", "baseline") if getattr(settings, name)}
    if not settings.record_golden and settings.golden_file.is_file():  # with --record-golden it is an output
        files["golden_file"] = settings.golden_file
    return files


def copy_input(run_dir: Path, name: str, path: Path, settings: Settings) -> dict[str, str] | None:
    """Copy one input into inputs/; None for an engine config inside the image (the image reference names it)."""
    in_container = bool(settings.image) and name in ROLE_SETTING.values()
    read = host_path(path, settings.mounts) if in_container else path
    if read is None:
        return None
    copy = Path(INPUTS_DIR) / f"{name}{read.suffix}"  # one per setting; `read` names the original
    (run_dir / INPUTS_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(read, run_dir / copy)
    entry = {"read": str(read), "copy": str(copy), "sha256": sha256_of(run_dir / copy)}
    return entry | ({"container_path": str(path)} if in_container else {})


def settings_record(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values (paths as text)."""
    return {f.name: str(value) if isinstance(value := getattr(settings, f.name), Path) else value
            for f in dataclasses.fields(settings) if f.name not in NOT_RECORDED}


def record(settings: Settings, run_id: str, run_dir: Path, *, profile_path: Path | None, rootdir: Path,
           invocation_dir: Path, invocation_args: Sequence[str]) -> None:
    """settings.json and inputs/ of a run. A replay records the settings as the replayed run was given them: its
    input files then differ only in where they were read (the copies), which `inputs` says, with their sha256."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = settings_record(settings)
    replayed = load(settings.replay) if settings.replay else None
    if replayed is not None:
        recorded |= {name: replayed["settings"][name] for name in INPUT_SETTINGS}
    inputs = {name: entry for name, path in input_files(settings, profile_path).items()
              if (entry := copy_input(run_dir, name, path, settings)) is not None}
    (run_dir / SETTINGS_FILE).write_text(json.dumps({
        "run_id": run_id, "replay_of": replayed["run_id"] if replayed else None, "rootdir": str(rootdir),
        "invocation": {"dir": str(invocation_dir), "args": list(invocation_args)},
        "settings": recorded, "inputs": inputs}, indent=1))


def write_outcomes(run_dir: Path, run_id: str, rootdir: Path, outcomes: list[dict]) -> None:
    """outcomes.json at the end of the session: what --replay-failed reruns."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OUTCOMES_FILE).write_text(json.dumps(
        {"run_id": run_id, "rootdir": str(rootdir), "outcomes": outcomes}, indent=1))


# --- replaying --------------------------------------------------------------------------------------------


def replay_notes(directory: Path) -> list[str]:
    """What a replay tells the user: the run it replays, and which original input files changed since."""
    data = load(directory)
    lines = [f"replay of run {data['run_id']} ({directory}): its settings, inputs from its copies in {INPUTS_DIR}/"]
    for name, entry in data["inputs"].items():
        original = Path(entry["read"])
        if "container_path" not in entry and (not original.is_file() or sha256_of(original) != entry["sha256"]):
            lines.append(f"  {name}: {original} {'changed' if original.is_file() else 'is gone'} since that run; "
                         "replayed from the copy")
    return lines


def nodeid_key(rootdir: Path, nodeid: str) -> str:
    """A nodeid made independent of the rootdir it is relative to: runs from another directory still match."""
    path, sep, rest = nodeid.partition("::")
    return f"{(rootdir / path).resolve()}{sep}{rest}"


def failed_tests(directory: Path) -> set[str]:
    """The tests that failed or errored in the run of `directory`, as nodeid_key()s."""
    path = directory / OUTCOMES_FILE
    try:
        data = json.loads(path.read_text())
        rootdir = Path(data["rootdir"])
        return {nodeid_key(rootdir, o["nodeid"]) for o in data["outcomes"] if o["outcome"] in FAILED}
    except FileNotFoundError:
        raise pytest.UsageError(f"--replay-failed: {path} is missing: that run did not finish, so which tests failed "
                                "is unknown; replay all of it with --replay alone") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise pytest.UsageError(f"--replay-failed: {path} is damaged ({type(error).__name__}: {error}); replay all "
                                "of that run with --replay alone") from None
