"""--replay reports/<run-id>: exactly that run's settings, engine configs and seeds, from the report alone;
--replay-failed: only its failed tests. A missing or damaged report is a usage error that says how to go on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llama4.config import resolve
from pytest_llama4.config.settings import Settings
from pytest_llama4.report import replay
from pytest_llama4.report.replay import nodeid_key, sha256_of

from .test_integration import assert_nothing_left, check_junit, properties, run_ids

# --- unit ---------------------------------------------------------------------------------------------------


def test_nodeids_match_across_rootdirs(tmp_path):
    assert nodeid_key(tmp_path, "suites/test_x.py::test_a[1-b::c]") == \
        nodeid_key(tmp_path / "suites", "test_x.py::test_a[1-b::c]") == \
        nodeid_key(tmp_path / "other", "../suites/test_x.py::test_a[1-b::c]")
    assert nodeid_key(tmp_path, "test_x.py::test_a") != nodeid_key(tmp_path, "test_x.py::test_b")


def test_failed_and_errored_tests_are_selected_once(tmp_path):
    outcomes = [{"nodeid": "t.py::ok", "outcome": "passed"}, {"nodeid": "t.py::bad", "outcome": "failed"},
                {"nodeid": "t.py::ok", "outcome": "error"},  # passed, then its teardown errored
                {"nodeid": "t.py::waived", "outcome": "xfailed"}, {"nodeid": "t.py::skip", "outcome": "skipped"}]
    (tmp_path / "outcomes.json").write_text(json.dumps({"rootdir": str(tmp_path), "outcomes": outcomes}))
    assert replay.failed_tests(tmp_path) == {nodeid_key(tmp_path, "t.py::bad"), nodeid_key(tmp_path, "t.py::ok")}


def test_a_mounted_engine_config_is_replayed_in_place_only_while_unchanged(tmp_path):
    """The container reads it through MOUNTS: the report's copy cannot stand in for it, so it must still match."""
    host = tmp_path / "configs" / "eagle_agg.yaml"
    host.parent.mkdir()
    host.write_text("max_batch_size: 8\n")
    settings = Settings(launcher="slurm", engine="dynamo-trtllm", image="img", mounts=f"{host.parent}:/mnt",
                        discovery="etcd")
    run_dir = tmp_path / "run"
    entry = replay.copy_input(run_dir, "engine_config", Path("/mnt/eagle_agg.yaml"), settings)
    assert entry == {"read": str(host), "copy": "inputs/engine_config.yaml", "sha256": sha256_of(host),
                     "container_path": "/mnt/eagle_agg.yaml"}
    assert replay.copy_input(run_dir, "engine_config", Path("/opt/in-image.yaml"), settings) is None
    assert resolve.verified_input(run_dir, "r1", "engine_config", entry) == "/mnt/eagle_agg.yaml"
    host.write_text("max_batch_size: 16\n")
    with pytest.raises(pytest.UsageError, match=rf"changed since run r1.*restore it with `cp {run_dir}/inputs/engine"):
        resolve.verified_input(run_dir, "r1", "engine_config", entry)


# --- runs of pytest ---------------------------------------------------------------------------------------


def inner(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reports-dir=reports", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def only_run(cwd: Path, exclude: set[str] = frozenset()) -> Path:
    (run_id,) = set(run_ids(cwd / "reports")) - exclude
    return cwd / "reports" / run_id


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run that launched nothing: its report has settings.json, inputs/ and outcomes.json."""
    cwd = tmp_path_factory.mktemp("finished")
    (cwd / "test_plain.py").write_text("def test_ok():\n    pass\n")
    done = inner(cwd, "test_plain.py")
    assert done.returncode == 0, done.stdout[-2000:]
    return only_run(cwd)


def damaged(finished_run: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "reports" / finished_run.name
    shutil.copytree(finished_run, copy)
    damage(copy)
    (tmp_path / "test_plain.py").write_text("def test_ok():\n    pass\n")
    return copy


def _first_copy(run_dir: Path) -> Path:
    entry = next(iter(json.loads((run_dir / "settings.json").read_text())["inputs"].values()))
    return run_dir / entry["copy"]


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda d: shutil.rmtree(d), "no such directory; pass the report directory of an earlier run"),
    (lambda d: (d / "settings.json").unlink(), "settings.json is missing, so that run's settings are unknown"),
    (lambda d: (d / "settings.json").write_text("{not json"), "settings.json is damaged (JSONDecodeError"),
    (lambda d: (d / "settings.json").write_text('{"run_id": "x"}'), "damaged (run_id, settings or inputs"),
    (lambda d: _first_copy(d).unlink(), "the report's copy of engine_config"),
    (lambda d: _first_copy(d).write_text("{}"), "was changed after run"),
], ids=["no-directory", "no-settings", "invalid-json", "incomplete-json", "copy-missing", "copy-changed"])
def test_a_missing_or_damaged_report_is_a_usage_error(finished_run, tmp_path, damage, expected):
    report = damaged(finished_run, tmp_path, damage)
    done = inner(tmp_path, f"--replay={report}", "test_plain.py")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
    assert expected in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert any(fix in done.stderr for fix in ("run without --replay", "restore it", "pass the report directory"))


@pytest.mark.parametrize(("args", "expected"), [
    (["--topology=disagg", "--speedup-ratio=2"], "the command line also sets --topology, --speedup-ratio: drop them"),
    (["--replay-failed"], "no test failed or errored in run"),
])
def test_replay_refuses_other_settings_and_has_nothing_to_rerun_after_a_green_run(finished_run, tmp_path, args,
                                                                                   expected):
    report = damaged(finished_run, tmp_path, lambda d: None)
    done = inner(tmp_path, f"--replay={report}", "test_plain.py", *args)
    assert expected in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.returncode == (pytest.ExitCode.OK if args == ["--replay-failed"] else pytest.ExitCode.USAGE_ERROR)
    assert run_ids(tmp_path / "reports") == [report.name], "a refused replay must not start a run"


def test_replay_failed_needs_replay_and_a_finished_run(finished_run, tmp_path):
    done = inner(tmp_path, "--replay-failed", "--collect-only")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR and "add --replay=reports/<run-id>" in done.stderr
    report = damaged(finished_run, tmp_path, lambda d: (d / "outcomes.json").unlink())
    done = inner(tmp_path, f"--replay={report}", "--replay-failed", "test_plain.py")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "outcomes.json is missing: that run did not finish" in done.stderr and "--replay alone" in done.stderr


# --- a failing run, replayed ----------------------------------------------------------------------------------

FAILING = """
import pytest

def test_ok(deployment):
    pass

def test_bad(deployment):
    assert False, "fails on purpose"

@pytest.fixture
def broken():
    raise RuntimeError("errors on purpose")

def test_errors(broken):
    pass
"""
PROFILE = """
name: tiny
engines: [mocker]
scenarios:
  - {name: chat, endpoint: chat, input_tokens: 16, output_tokens: 4, concurrency: 1, num_prompts: 2, seed: 7,
     limits: {failed: {ceiling: 0}}}
"""


@pytest.mark.integration
def test_replay_is_exact_and_replay_failed_reruns_only_the_failed_tests(tmp_path):
    (tmp_path / "test_mixed.py").write_text(FAILING)
    config, profile = tmp_path / "mine.json", tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"num_gpu_blocks": 4096, "block_size": 32}))
    profile.write_text(PROFILE)
    first = inner(tmp_path, "test_mixed.py", f"--engine-config={config}", f"--profile-file={profile}",
                  "--speedup-ratio=7")
    assert first.returncode == pytest.ExitCode.TESTS_FAILED, first.stdout[-3000:]
    original = only_run(tmp_path)
    recorded = json.loads((original / "settings.json").read_text())
    assert recorded["settings"]["speedup_ratio"] == 7.0 and recorded["settings"]["engine_config"] == str(config)
    assert recorded["inputs"]["profile_file"]["sha256"] == sha256_of(profile)
    # the originals change or disappear: the replay must not notice but through its note
    config.write_text(json.dumps({"num_gpu_blocks": 1}))
    profile.unlink()

    again = inner(tmp_path, "test_mixed.py", f"--replay=reports/{original.name}")
    assert again.returncode == pytest.ExitCode.TESTS_FAILED, again.stdout[-3000:]
    assert "1 failed, 1 passed, 1 error" in again.stdout
    replayed = only_run(tmp_path, {original.name})
    mine = json.loads((replayed / "settings.json").read_text())
    assert json.dumps(mine["settings"]) == json.dumps(recorded["settings"]), "settings differ from the replayed run's"
    assert mine["replay_of"] == original.name
    hashes = [{name: entry["sha256"] for name, entry in r["inputs"].items()} for r in (mine, recorded)]
    assert hashes[0] == hashes[1] and "engine_config" in hashes[0]
    assert (replayed / "engine_configs" / "worker-0.json").read_bytes() == \
        (original / "engine_configs" / "worker-0.json").read_bytes()
    facts = json.loads((replayed / "provenance.json").read_text())
    assert facts["replay_of"] == original.name
    assert properties(check_junit(replayed / "junit.xml"))["provenance.replay_of"] == original.name
    for line in (f"replay of run {original.name} ({original}): its settings, inputs from its copies in inputs/",
                 f"  engine_config: {config} changed since that run; replayed from the copy",
                 f"  profile_file: {profile} is gone since that run; replayed from the copy",
                 f"engine configs: identical to run {original.name}'s (sha256 of worker-0)"):
        assert line in again.stdout.splitlines(), again.stdout[-3000:]

    failed_only = inner(tmp_path, "test_mixed.py", f"--replay=reports/{original.name}", "--replay-failed", "-n", "2")
    assert failed_only.returncode == pytest.ExitCode.TESTS_FAILED, failed_only.stdout[-3000:]
    assert "1 failed, 1 error" in failed_only.stdout and "passed" not in failed_only.stdout.splitlines()[-1]
    assert f"--replay-failed: 2 test(s) selected, those that failed or errored in run {original.name}" in \
        failed_only.stdout
    rerun = only_run(tmp_path, {original.name, replayed.name})
    ran = {o["nodeid"] for o in json.loads((rerun / "outcomes.json").read_text())["outcomes"]}
    assert ran == {"test_mixed.py::test_bad", "test_mixed.py::test_errors"}
    assert_nothing_left(tmp_path / "reports")

