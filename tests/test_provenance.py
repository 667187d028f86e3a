"""Provenance: provenance.json, the same facts as `provenance.*` JUnit properties (also under pytest-xdist, where
the controller writes junit.xml), and the terminal header; for a local run and a SLURM run."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pytest_llama4.config.paths import PROJECT_ROOT
from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.local import LocalLauncher
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher
from pytest_llama4.measure.telemetry import nvml_unavailable_reason
from pytest_llama4.report import provenance
from pytest_llama4.report.replay import sha256_of

from . import test_slurm
from .conftest import require
from .test_integration import assert_nothing_left, check_junit, properties, run_ids, run_pytest

allocation = test_slurm.allocation  # the fixture: a real allocation that outlives the inner pytest


def leaves(value, path="") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {path: value} if value else {path: ""}
    return {path: value}


def assert_no_empty_fact(facts: dict) -> None:
    empty = [name for name, value in leaves(facts).items() if value in ("", None, [], {})]
    assert empty == [], f"provenance facts must never be empty: {empty}"


# --- unit ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "expected"), [
    (Settings(), {"reference": "none", "digest": "none"}),
    (Settings(launcher="slurm", image="nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1"),
     {"reference": "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1", "digest": "not reported"}),
    (Settings(launcher="slurm", image="nvcr.io#nvidia/dynamo@sha256:" + "ab" * 32),
     {"reference": "nvcr.io#nvidia/dynamo@sha256:" + "ab" * 32, "digest": "sha256:" + "ab" * 32}),
])
def test_image_reference_and_digest_from_the_reference(settings, expected):
    assert provenance.image_facts(settings) == expected


def test_endpoint_runs_say_what_they_cannot_see():
    settings = Settings(launcher="endpoint", endpoint="http://h:1")
    for env in (provenance.environment(settings, None), provenance.run_environment(settings, None, "run")):
        assert env["gpus"].startswith("not reported (--endpoint") and env["slurm"] == "none"
        assert set(env["versions"].values()) == {provenance.ENDPOINT}
    assert provenance.image_facts(settings)["digest"] == provenance.ENDPOINT


def test_git_revision_of_this_checkout_and_unknown_outside_git(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}( \(uncommitted changes\))?", provenance.git_revision(PROJECT_ROOT))
    assert provenance.git_revision(tmp_path) == "unknown"
    nested = PROJECT_ROOT / "pytest_llama4"  # inside the checkout, but not its top: an installed copy, say
    assert provenance.git_revision(nested) == "unknown"


def test_nvidia_smi_lines_per_node():
    # GPUS_SCRIPT's output as an H100 node printed it (2026-11-24), doubled to two GPUs; node2 has none
    output = ("node1|gpu|NVIDIA H100 80GB HBM3, 580.159.04\nnode1|gpu|NVIDIA H100 80GB HBM3, 580.159.04\n"
              "node1|cuda|13.0\nsrun: a warning on stdout\nnode1|end|\nnode2|end|\n")
    found = provenance.parse_gpus(output, ("node1", "node2", "node3"))
    assert found["node1"] == {"gpus": ["NVIDIA H100 80GB HBM3"] * 2, "driver": "580.159.04", "cuda": "13.0"}
    assert found["node2"] == provenance.NO_GPU
    assert found["node3"].startswith("not reported")
    assert provenance.gpu_summary(found).startswith(
        "node1: 2x NVIDIA H100 80GB HBM3 (driver 580.159.04, CUDA 13.0); node2: none; node3: not reported")


def test_local_gpus_through_nvml():
    (facts,) = provenance.probe_gpus(LocalLauncher("run")).values()
    if nvml_unavailable_reason():
        assert facts == provenance.NO_GPU
    else:
        assert facts["gpus"] and re.fullmatch(r"\d+\.\d+", facts["cuda"]) and facts["driver"] != "none"


def test_local_versions_are_this_venvs():
    versions = provenance.probe_versions(Settings(), LocalLauncher("run"))
    assert versions == {"dynamo": metadata.version("ai-dynamo"), "tensorrt_llm": "not installed",
                        "python": ".".join(map(str, sys.version_info[:3]))}


def test_a_failed_probe_is_reported_not_raised():
    # srun refuses an unknown job (or is not installed): either way a fact
    gone = SlurmLauncher(Allocation("999999", ("node1",)), "run")
    versions = provenance.probe_versions(Settings(launcher="slurm"), gone, timeout=30)
    assert set(versions) == {"dynamo", "tensorrt_llm", "python"}
    assert all(v.startswith("not reported (`srun --overlap --jobid=999999") for v in versions.values()), versions
    assert provenance.probe_gpus(gone, timeout=30)["node1"].startswith("not reported (")


def test_a_slurm_run_without_its_allocation_is_not_reported():
    env = provenance.run_environment(Settings(launcher="slurm"), None, "run")
    why = "not reported (no deployment was launched in the --slurm-alloc allocation)"
    assert env == {"versions": dict.fromkeys(provenance.VERSION_NAMES, why), "gpus": why, "slurm": why}


def test_properties_are_flat_text_with_copy_pasteable_argv():
    facts = {"services": {"worker-0": {"argv": ["python", "-m", "dynamo.mocker", "--x", "a b"], "nodes": ["n1", "n2"],
                                       "env": {"DYN_SYSTEM_PORT": "1"}}}, "slurm": "none"}
    assert provenance.properties(facts) == {
        "provenance.services.worker-0.argv": "python -m dynamo.mocker --x 'a b'",
        "provenance.services.worker-0.nodes": "n1, n2",
        "provenance.services.worker-0.env.DYN_SYSTEM_PORT": "1",
        "provenance.slurm": "none"}


# --- a local run, under pytest-xdist ------------------------------------------------------------------------


@pytest.mark.integration
def test_local_run_records_provenance_in_json_junit_and_summary(pytester, tmp_path):
    pytester.makepyfile("def test_up(deployment): pass\n\ndef test_other(): pass\n")
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, "-n", "2", "--topology=disagg")
    assert result.ret == 0, result.stdout.str()[-3000:]
    (run_id,) = run_ids(reports)
    run_dir = reports / run_id
    facts = json.loads((run_dir / "provenance.json").read_text())
    assert_no_empty_fact(facts)
    assert facts["run_id"] == run_id and facts["replay_of"] == "none"
    assert facts["plugin"] == {"version": metadata.version("pytest-llama4"),
                               "git_revision": provenance.git_revision()}
    assert facts["image"] == {"reference": "none", "digest": "none"} and facts["slurm"] == "none"
    assert facts["versions"]["dynamo"] == metadata.version("ai-dynamo")
    (gpus,) = facts["gpus"].values()
    assert gpus == provenance.NO_GPU or not nvml_unavailable_reason()
    assert set(facts["services"]) == {"frontend-0", "prefill-0", "decode-0"}
    assert facts["services"]["frontend-0"]["argv"][1:3] == ["-m", "dynamo.frontend"]
    assert "DYN_SYSTEM_PORT" in facts["services"]["decode-0"]["env"]
    for worker in ("prefill-0", "decode-0"):
        config = facts["engine_configs"][worker]
        assert config["sha256"] == sha256_of(run_dir / "engine_configs" / f"{worker}.json") == sha256_of(
            Path(config["path"]))
    # the xdist controller wrote junit.xml: every fact is there, as the same flat text
    props = properties(check_junit(run_dir / "junit.xml"))
    assert {k: v for k, v in props.items() if k.startswith("provenance.")} == provenance.properties(facts)
    result.stdout.fnmatch_lines([
        "*= pytest-llama4 =*",
        f"provenance: pytest-llama4 {facts['plugin']['version']} at git *; Dynamo {facts['versions']['dynamo']}, "
        "TensorRT-LLM not installed, Python *",
        "image: none; SLURM: none",
        "GPUs: *",
        f"report: {run_dir}/ (junit.xml, summary.html, provenance.json, logs/)"])
    assert_nothing_left(reports)


# --- a SLURM run --------------------------------------------------------------------------------------------


@pytest.fixture
def slurm_job(allocation):
    require(test_slurm.slurm_available(), "SLURM tests")
    return allocation(2)


@pytest.mark.integration
@pytest.mark.slurm
def test_slurm_run_records_job_nodes_and_what_each_node_has(tmp_path, slurm_job):
    (tmp_path / "test_up.py").write_text("def test_up(deployment):\n    pass\n")
    result = test_slurm.run_inner(tmp_path, test_slurm.inner_env(slurm_job), "--topology=disagg", "test_up.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (run_id,) = run_ids(tmp_path)
    facts = json.loads((tmp_path / run_id / "provenance.json").read_text())
    assert_no_empty_fact(facts)
    assert facts["slurm"] == {"job_id": slurm_job["SLURM_JOB_ID"], "nodelist": "gpu-a01,gpu-a02",
                              "addresses": {"gpu-a01": "127.0.1.11", "gpu-a02": "127.0.1.12"}}  # NodeAddr, resolved
    assert facts["gpus"] == {"gpu-a01": provenance.NO_GPU, "gpu-a02": provenance.NO_GPU}  # no GPU on the local cluster
    assert facts["versions"]["dynamo"] == metadata.version("ai-dynamo")  # probed in a step on the head node
    assert facts["services"]["decode-0"]["nodes"] == ["gpu-a02"]
    assert facts["services"]["prefill-0"]["nodes"] == ["gpu-a01"]
    assert set(facts["engine_configs"]) == {"prefill-0", "decode-0"}
    props = properties(check_junit(tmp_path / run_id / "junit.xml"))
    assert props["provenance.slurm.job_id"] == slurm_job["SLURM_JOB_ID"]
    assert props["provenance.gpus.gpu-a02.gpus"] == "none"
    assert f"SLURM job {slurm_job['SLURM_JOB_ID']} (gpu-a01,gpu-a02)" in result.stdout
    assert "GPUs: gpu-a01: none; gpu-a02: none" in result.stdout
    assert test_slurm.steps_of(slurm_job["SLURM_JOB_ID"]) == [], "a probe step outlived the run"
    assert_nothing_left(tmp_path)
