"""--dry-run: every service's command line, printed and written as scripts, golden-tested; nothing launched."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llama4.config.paths import PROJECT_ROOT
from pytest_llama4.config.resolve import declared, resolve
from pytest_llama4.config.topology import make_plan
from pytest_llama4.deploy.engines import dynamo_releases
from pytest_llama4.deploy.engines.base import Command
from pytest_llama4.deploy.fixture_model import ensure_model_dir
from pytest_llama4.deploy.launchers.allocation import Allocation, SlurmError
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher
from pytest_llama4.plugin.session import new_run_id
from pytest_llama4.report import dryrun

from .conftest import require
from .test_integration import processes_of_run, run_ids
from .test_slurm import inner_env, slurm_available

GOLDEN = Path(__file__).parent / "golden" / "dryrun"
IMAGE = "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:{release}"
EAGLE = "/mnt/engine_configs/llama4/eagle"
CLUSTER = ["--launcher=slurm", "--nodelist=gb-[01-02]", "--http-port=8000"]  # names SLURM does not know
MOUNTS = f"--mounts={PROJECT_ROOT}/:/mnt"


def dynamo_trtllm(release: str, topology: str) -> list[str]:
    """A dynamo-trtllm dry run in the image of `release`, with the seed guide's Eagle configs."""
    configs = ([f"--engine-config={EAGLE}/eagle_agg.yaml"] if topology == "agg" else
               ["--topology=disagg", f"--prefill-engine-config={EAGLE}/eagle_prefill.yaml",
                f"--decode-engine-config={EAGLE}/eagle_decode.yaml"])
    return [*CLUSTER, f"--image={IMAGE.format(release=release)}", MOUNTS, "--engine=dynamo-trtllm",
            "--discovery=etcd", f"--dynamo-version={release}", *configs]


# Where each golden file's truth comes from; its header must say exactly this (UPDATE_GOLDEN=1 writes it).
SRUN_SOURCE = ("srun lines: ai-dynamo/dynamo multinode/srun_{agg,disagg}regated.sh @ 1cc36a62 and "
               "start_trtllm_worker.sh @ 38f0bf04, the scripts seed guide 000_d31fb686c17295b0.txt lines 51-60 runs "
               "(quoted in tests/test_cluster_engines.py)")
ENGINE_CONFIGS = ("engine configs: ai-dynamo/dynamo components/backends/trtllm/engine_configs/llama4/eagle @ 3d8f400 "
                  "(agg), 59d4642 (prefill, decode), as engine_configs/README.md lists them")


def release_source(release: str) -> str:
    entry = dynamo_releases.release(release)
    return (f"worker components, metrics flag and env: the release table's {entry.since} entry "
            f"(pytest_llama4/deploy/engines/dynamo_releases.py), read from the ai-dynamo {release} wheel by "
            "tests/test_dynamo_releases.py")


MOCKER_SOURCE = ("mocker and frontend flags: the ai-dynamo release the project pins (1.4.2, the `local` extra); its "
                 "real frontend and mocker run these lines in tests/test_integration.py")
CASES = {
    **{f"slurm-dynamo-trtllm-{topology}": (dynamo_trtllm("0.4.1", topology),
                                           [SRUN_SOURCE, release_source("0.4.1"), ENGINE_CONFIGS])
       for topology in ("agg", "disagg")},
    # The disaggregated plan once per Dynamo release read (DESIGN.md section 4): what changes between them is
    # the release table's, and only that.
    **{f"slurm-dynamo-trtllm-disagg-{release}": (dynamo_trtllm(release, "disagg"),
                                                 [SRUN_SOURCE, release_source(release), ENGINE_CONFIGS])
       for release in dynamo_releases.RELEASES_CHECKED if release != "0.4.1"},
    "slurm-trtllm-serve-agg": ([*CLUSTER, f"--image={IMAGE.format(release='0.4.1')}", MOUNTS,
                                "--engine=trtllm-serve", "--gpus-per-node=8",
                                "--engine-config=/mnt/engine_configs/trtllm_serve/extra-llm-api-config.yml"],
                               ["trtllm-serve lines: seed guide 002_e83770da17e35a42.txt (its trtllm-serve command "
                                "and extra-llm-api-config.yml)", "srun lines: NVIDIA/TensorRT-LLM examples/"
                                "disaggregated/slurm/simple_example/launch.slurm @ 14e6b10f"]),
    "slurm-trtllm-serve-disagg": ([*CLUSTER, f"--image={IMAGE.format(release='0.4.1')}", MOUNTS,
                                   "--engine=trtllm-serve", "--topology=disagg",
                                   f"--prefill-engine-config={EAGLE}/eagle_prefill.yaml",
                                   f"--decode-engine-config={EAGLE}/eagle_decode.yaml"],
                                  ["disaggregated proxy and servers: NVIDIA/TensorRT-LLM examples/disaggregated/"
                                   "README.md @ 013971245ed5 and slurm/simple_example/launch.slurm @ 14e6b10f "
                                   "(tests/golden/trtllm_disaggregated.yaml)", ENGINE_CONFIGS]),
    "slurm-mocker-agg": ([*CLUSTER], [MOCKER_SOURCE]),
    "slurm-mocker-disagg": ([*CLUSTER, "--topology=disagg", "--discovery=etcd"], [MOCKER_SOURCE]),
    "local-mocker-agg": (["--http-port=8000"], [MOCKER_SOURCE]),
    "local-mocker-disagg": (["--http-port=8000", "--topology=disagg"], [MOCKER_SOURCE]),
}
PORT = re.compile(r"(?<![\d.-])(2\d{4}|3[0-2]\d{3})(?![\d.])")  # ports.PORT_RANGE, as whole numbers


def normalize(text: str, run_id: str, reports: Path) -> str:
    """Placeholders for what changes between runs: run id, picked ports (numbered in order of appearance), paths."""
    for value, name in ((sys.executable, "<python>"), (str(ensure_model_dir()), "<fixture-model>"),
                        (str(reports), "<reports>"), (str(PROJECT_ROOT), "<root>"), (run_id, "<run-id>")):
        text = text.replace(value, name)
    ports: dict[str, str] = {}
    return PORT.sub(lambda m: ports.setdefault(m[1], f"<port-{len(ports) + 1}>"), text)


def plan_text(pytester, reports: Path, args: list[str]) -> tuple[str, str]:
    """The dry run of `args`, resolved as the command line would be (no environment variables)."""
    config = pytester.parseconfig(*args, f"--reports-dir={reports}", "--dry-run")
    settings = resolve(config, environ={})
    run_id = new_run_id()
    assumed = declared(config, "dynamo_version", environ={}) is None
    return dryrun.write_plan(settings, run_id, reports / run_id / "plan", environ={}, release_assumed=assumed), run_id


def check_golden(name: str, text: str) -> None:
    """The dry run's text equals the golden file's body; the file's header says where that truth comes from."""
    path = GOLDEN / f"{name}.txt"
    header = "".join(f"# {line}\n" for line in CASES[name][1])
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(header + text + "\n")
    golden = path.read_text()
    assert golden.startswith(header), f"{path} must start with its provenance:\n{header}"
    assert text + "\n" == golden.removeprefix(header), \
        f"dry-run output differs from {path} (UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("name", CASES)
def test_dry_run_golden(pytester, tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hub-cache"))  # the same lines on every machine
    monkeypatch.delenv("HF_TOKEN", raising=False)
    text, run_id = plan_text(pytester, tmp_path, CASES[name][0])
    check_golden(name, normalize(text, run_id, tmp_path))
    plan_dir = tmp_path / run_id / "plan"
    printed = dict(re.findall(r"^(\S+) on .*\n  (.*)$", text, re.MULTILINE))
    assert printed, text
    for service, line in printed.items():
        script = plan_dir / f"{service}.sh"
        assert script.stat().st_mode & stat.S_IXUSR
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
        body = script.read_text().splitlines()
        assert body[:3] == ["#!/usr/bin/env bash", body[1], "set -euo pipefail"]
        exports = [line.removeprefix("export ") for line in body if line.startswith("export ")]
        (command,) = [line.removeprefix("exec ") for line in body if line.startswith("exec ")]
        assert line == " ".join([*exports, command]), "the script runs what the dry run printed"


@pytest.mark.parametrize("release", dynamo_releases.RELEASES_CHECKED)
def test_each_release_golden_carries_its_release_table_entry(release):
    """The per-release goldens are the release table's facts: each worker line has the entry's metrics flag (or
    none) and system env, so a golden rewritten against a wrong table entry fails here too."""
    name = "slurm-dynamo-trtllm-disagg" + ("" if release == "0.4.1" else f"-{release}")
    text = (GOLDEN / f"{name}.txt").read_text()
    entry = dynamo_releases.release(release)
    workers = re.findall(r"^(?:prefill|decode)-0 on .*\n  (.*)$", text, re.MULTILINE)
    assert len(workers) == 2, text
    flags = {"--publish-events-and-metrics", "--publish-kv-events", "--publish-metrics"}
    for line in workers:
        assert {flag for flag in flags if f" {flag}" in line} == ({entry.metrics_flag} if entry.metrics_flag else set())
        assert all(f"{k}={v}" in line for k, v in entry.system_env.items()), line
    assert f"tensorrtllm-runtime:{release}," in text and f"Dynamo release: {release} (--dynamo-version)" in text


def test_engine_configs_are_copied_as_each_worker_reads_them(pytester, tmp_path):
    _, run_id = plan_text(pytester, tmp_path, CASES["slurm-dynamo-trtllm-disagg"][0])
    configs = tmp_path / run_id / "plan" / "engine_configs"
    assert sorted(p.name for p in configs.iterdir()) == ["decode-0.yaml", "prefill-0.yaml"]
    for role in ("prefill", "decode"):
        source = PROJECT_ROOT / "engine_configs/llama4/eagle" / f"eagle_{role}.yaml"
        assert (configs / f"{role}-0.yaml").read_text() == source.read_text()


def test_the_srun_line_is_what_the_slurm_launcher_executes(tmp_path, monkeypatch):
    """SlurmLauncher.start's own Popen call, caught: the dry run prints the same argv and adds the same variables."""
    seen = {}

    def popen(argv, **kwargs):
        seen.update(argv=argv, env=kwargs["env"])
        raise OSError("not launched")

    monkeypatch.setattr("pytest_llama4.deploy.launchers.slurm.subprocess.Popen", popen)
    allocation = Allocation("42", ("gb-01", "gb-02"))
    decode = make_plan("disagg").workers[-1]
    command = Command(("python3", "-m", "x"), {"A": "1"}, tasks_per_node=4, mpi=True)
    launcher = SlurmLauncher(allocation, "run-1", image=IMAGE.format(release="0.4.1"), mounts="/a:/b")
    with pytest.raises(OSError, match="not launched"):
        launcher.start(decode, command, tmp_path / "decode.log")
    env, argv = dryrun.launch_line(decode, command, "run-1", launcher)
    assert argv == seen["argv"]
    assert env == {k: v for k, v in seen["env"].items() if os.environ.get(k) != v or k in command.env}


@pytest.mark.parametrize(("nodelist", "names"), [
    ("node[1-2]", ("node1", "node2")),
    ("gpu-[01-03,07],login", ("gpu-01", "gpu-02", "gpu-03", "gpu-07", "login")),
    ("r[1-2]-n[8-9]", ("r1-n8", "r1-n9", "r2-n8", "r2-n9")),
    ("a,b", ("a", "b")),
])
def test_nodelist_expansion_without_slurm(monkeypatch, nodelist, names):
    monkeypatch.setattr(dryrun.shutil, "which", lambda name: None)
    assert dryrun.expand_nodelist(nodelist) == names


def test_node_addresses_come_from_slurm_once_or_are_the_hostnames(monkeypatch):
    asked = []

    def scontrol(*argv, timeout):
        asked.append((argv, timeout))
        return "NodeName=n1 Arch=x86_64 NodeAddr=10.0.0.1 Port=1\nNodeName=n2 NodeAddr=10.0.0.2 NodeHostName=n2\n"

    monkeypatch.setattr(dryrun.slurm_allocation, "slurm", scontrol)
    assert dryrun.node_addresses(("n1", "n2")) == {"n1": "10.0.0.1", "n2": "10.0.0.2"}
    assert asked == [(("scontrol", "show", "node", "-o", "n1,n2"), dryrun.ADDRESS_TIMEOUT)]

    def no_controller(*argv, timeout):
        raise SlurmError("`scontrol show node` did not answer within 5s")

    monkeypatch.setattr(dryrun.slurm_allocation, "slurm", no_controller)
    allocation = dryrun.PlannedAllocation("1", ("n1", "n2"), known=dryrun.node_addresses(("n1", "n2")))
    assert [allocation.address(n) for n in allocation.nodes] == ["n1", "n2"]


def test_outside_an_allocation_the_nodes_must_be_named(pytester, tmp_path):
    config = pytester.parseconfig("--launcher=slurm", "--dry-run", f"--reports-dir={tmp_path}")
    settings = resolve(config, environ={})
    with pytest.raises(pytest.UsageError, match=r"outside an allocation: name the nodes .* --nodelist=node\[1-1\]"):
        dryrun.write_plan(settings, "r", tmp_path, environ={})
    config = pytester.parseconfig("--launcher=slurm", "--dry-run", "--topology=disagg", "--nodelist=gb-01")
    with pytest.raises(pytest.UsageError, match="the plan needs 2 node"):
        dryrun.write_plan(resolve(config, environ={}), "r", tmp_path, environ={})


def test_pytest_dry_run_prints_the_plan_and_exits_0(tmp_path):
    """The command line itself: status 0, the golden text on stdout, no test collected, nothing running."""
    (tmp_path / "test_never.py").write_text("def test_never(deployment):\n    raise AssertionError('ran')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--reports-dir={tmp_path}",
                           *CASES["local-mocker-disagg"][0], "--dry-run", "test_never.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=inner_env({}))
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = run_ids(tmp_path)
    check_golden("local-mocker-disagg", normalize(done.stdout.rstrip("\n"), run_id, tmp_path))
    assert "nothing was launched; plan in" in done.stderr and "collected" not in done.stdout
    assert sorted(p.name for p in (tmp_path / run_id).iterdir()) == ["plan"]
    assert processes_of_run(run_id) == []


@pytest.mark.integration
@pytest.mark.slurm
def test_dry_run_on_slurm_launches_nothing(tmp_path):
    """On the real cluster, outside an allocation: srun, salloc and sbatch are never called (shims on PATH record any
    call), squeue lists no job or step of the run, no process carries its label; addresses are SLURM's NodeAddr."""
    require(slurm_available(), "the SLURM dry-run test")
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("srun", "salloc", "sbatch"):
        (shims / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\nexec /usr/bin/{tool} "$@"\n')
        (shims / tool).chmod(0o755)
    env = inner_env({})
    env["PATH"] = f"{shims}:{env['PATH']}"
    reports = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--reports-dir={reports}",
                           "--launcher=slurm", "--nodelist=gpu-a[01-02]", "--topology=disagg", "--discovery=etcd",
                           "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = run_ids(reports)
    assert not (tmp_path / "calls").exists(), (tmp_path / "calls").read_text()
    assert "nodes gpu-a01 (127.0.1.11), gpu-a02 (127.0.1.12)" in done.stdout  # NodeAddr hostnames, resolved
    assert re.search(r"^  .* srun --overlap \"--jobid=\$\{SLURM_JOB_ID\}\" .* --nodelist=gpu-a02 .*dynamo\.mocker",
                     done.stdout, re.MULTILINE)
    names = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    steps = subprocess.run(["squeue", "-h", "-s", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    assert run_id not in names + steps
    assert processes_of_run(run_id) == []


def test_containers_see_the_hub_cache_and_token_without_showing_it(tmp_path, monkeypatch):
    hub = tmp_path / "hf"
    hub.mkdir()
    monkeypatch.setenv("HF_HOME", str(hub))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    launcher = SlurmLauncher(Allocation("42", ("gb-01",)), "run-1", image=IMAGE.format(release="0.4.1"),
                            mounts="/a:/b")
    worker = make_plan("agg").workers[0]
    env, argv = dryrun.launch_line(worker, Command(("python3", "-m", "x"), {"A": "1"}), "run-1", launcher)
    assert env["HF_HOME"] == str(hub)
    assert f"--container-mounts=/a:/b,{hub}:{hub}" in argv and "--container-name=llama4-run-1" in argv
    assert "--container-env=A,HF_HOME,HF_TOKEN" in argv
    assert "hf_secret_value" not in " ".join(argv) + " ".join(env.values()), "the token travels by name only"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "absent"))
    env, argv = dryrun.launch_line(worker, Command(("python3",)), "run-1", launcher)
    assert "--container-mounts=/a:/b" in argv and "HF_HOME" not in env and not any("HF_TOKEN" in a for a in argv)
