"""Preflight: the checks' verdicts and messages, the step on local processes, and on the real SLURM cluster the three
failures it exists for (a model missing on one node, a planned port taken, an engine-config key the engine rejects),
each stopping the run before anything is launched."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pytest_llama4.config.paths import PROJECT_ROOT
from pytest_llama4.config.resolve import declared
from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy import preflight
from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.local import LocalLauncher
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher
from pytest_llama4.deploy.phases import Phase
from pytest_llama4.deploy.ports import free_port
from pytest_llama4.deploy.preflight import Failure, NodePlan, PreflightError
from pytest_llama4.deploy.wiring import wire

from .test_integration import assert_nothing_left, run_ids
from .test_slurm import allocation, inner_env, require_slurm, run_inner, steps_of  # noqa: F401 (fixture)

EAGLE = PROJECT_ROOT / "engine_configs" / "llama4" / "eagle"
TRTLLM = Settings(launcher="slurm", engine="dynamo-trtllm", topology="disagg", model="/models/maverick",
                  prefill_engine_config=EAGLE / "eagle_prefill.yaml", decode_engine_config=EAGLE / "eagle_decode.yaml",
                  decode_nodes=2, http_port=8000)


class KnownAddresses(Allocation):
    def address(self, node: str) -> str:
        return "10.0.0." + node[-1]


def wired(settings: Settings, launcher, tmp_path: Path):
    plan = settings.plan
    return plan, wire(plan, settings, launcher, settings.http_port or launcher.allocate_port(), tmp_path,
                      tmp_path / "configs")


# ------------------------------------------------------------------------------------------------ unit


def test_skip_names():
    assert preflight.skipped(Settings(skip_preflight="all")) == frozenset(preflight.CHECKS)
    assert preflight.skipped(Settings(skip_preflight="ports, shm")) == {"ports", "shm"}
    assert preflight.skipped(Settings()) == frozenset()
    with pytest.raises(pytest.UsageError, match=r"unknown check.* gpu; choose from model, engine-configs"):
        preflight.skipped(Settings(skip_preflight="gpu"))


def test_checks_that_apply_to_each_engine():
    assert preflight.applicable(Settings(engine="mocker")) == {"model", "engine-configs", "ports", "shm",
                                                               "dynamo-version"}
    assert preflight.applicable(TRTLLM) == set(preflight.CHECKS)
    assert "dynamo-version" not in preflight.applicable(Settings(engine="trtllm-serve"))


def test_each_check_lands_on_the_node_that_needs_it(tmp_path):
    launcher = SlurmLauncher(KnownAddresses("7", ("n1", "n2", "n3")), "run")
    launcher.allocate_port = iter(range(30001, 30100)).__next__
    plan, wiring = wired(TRTLLM, launcher, tmp_path)
    nodes = preflight.node_plans(TRTLLM, plan, wiring, launcher, set(preflight.CHECKS))
    assert list(nodes) == ["n1", "n2", "n3"]
    prefill, decode = str(EAGLE / "eagle_prefill.yaml"), str(EAGLE / "eagle_decode.yaml")
    assert nodes["n1"].ports == {8000: "--http-port=8000", 30001: "port 30001 of prefill-0"}
    assert nodes["n2"].ports == {30002: "port 30002 of decode-0"} and nodes["n3"].ports == {}
    assert nodes["n1"].validate == {prefill: "prefill-0"} and nodes["n2"].validate == {decode: "decode-0"}
    assert list(nodes["n3"].paths) == ["/models/maverick"]  # the decode worker's second node reads the weights only
    assert nodes["n2"].paths[decode] == ("engine-configs", f"decode-0's engine config {decode}")
    hub = preflight.node_plans(dataclasses.replace(TRTLLM, model=None), plan,
                               dataclasses.replace(wiring, model="nvidia/Llama-4"), launcher, {"model"})
    assert all(not node.paths for node in hub.values()), "a hub id is the engine's business, not a path"


def test_a_rewiring_keeps_the_ports_preflight_checked(tmp_path):
    launcher = SlurmLauncher(KnownAddresses("7", ("n1", "n2", "n3")), "run")
    _, first = wired(TRTLLM, launcher, tmp_path)
    plan = TRTLLM.plan
    again = wire(plan, dataclasses.replace(TRTLLM, dynamo_version="0.4.1"), launcher, 8000, tmp_path,
                 tmp_path / "configs", reuse_ports=first.taken)
    assert again.listens == first.listens
    decode = next(s for s in plan.workers if s.role == "decode")
    assert "--disaggregation-strategy" in again.commands[decode].argv, "the probed release's flags"


def node(**paths) -> NodePlan:
    return NodePlan(paths={p: (check, what) for p, (check, what) in paths.items()})


FACTS = {"unreadable": {}, "busy_ports": [], "shm_free": 8 << 30, "dynamo": "1.6.1", "validated": {}}


@pytest.mark.parametrize(("plan", "facts", "expected"), [
    (NodePlan(paths={"/m": ("model", "/m (--model/MODEL_PATH)")}), {"unreadable": {"/m": "No such file or directory"}},
     "n2: model: /m (--model/MODEL_PATH) is not readable there: No such file or directory; fix: put it at that path "
     "on n2, e.g. on a filesystem every node mounts, or point --model/MODEL_PATH at a path every node sees"),
    (NodePlan(ports={8000: "--http-port=8000"}), {"busy_ports": [8000]},
     "n2: ports: --http-port=8000: the port is already in use on n2; fix: stop what holds it (`ss -ltnp` on n2) or "
     "pass --http-port=0 to pick a free port"),
    (NodePlan(ports={30001: "port 30001 of decode-0"}), {"busy_ports": [30001]},
     "n2: ports: port 30001 of decode-0 is already in use on n2; fix: run again"),
    (NodePlan(), {"shm_free": 64 << 20}, "n2: shm: /dev/shm has 0.06 GiB free, less than 1 GiB; fix: free /dev/shm"),
    (NodePlan(), {"gpus": 2, "gpu_apps": []},
     "n2: gpus: 2 GPU(s) listed by nvidia-smi -L, NUM_GPUS_PER_NODE is 4; fix: request nodes with 4 GPUs"),
    (NodePlan(), {"gpus": 4, "gpu_apps": ["4242, 40000 MiB"]},
     "n2: gpu-memory: processes already hold GPU memory (pid, MiB): 4242, 40000 MiB; fix: stop them"),
    (NodePlan(validate={"/c.yaml": "decode-0"}),
     {"validated": {"/c.yaml": {"validator": "tensorrt_llm 1.2.0", "errors": [
         {"key": "kv_cache_config.dtyp", "message": "Extra inputs are not permitted"}]}}},
     "n2: engine-config-keys: decode-0's engine config /c.yaml: 'kv_cache_config.dtyp': Extra inputs are not "
     "permitted (TorchLlmArgs of tensorrt_llm 1.2.0 on n2); fix: remove or rename 'kv_cache_config.dtyp' "
     "(`pytest-llama4 lint-config /c.yaml` suggests the spelling), or --skip-preflight=engine-config-keys"),
])
def test_verdicts_name_node_check_and_fix(plan, facts, expected):
    (failure,) = preflight.judge("n2", plan, {**FACTS, **facts}, dataclasses.replace(TRTLLM, http_port=8000),
                                 set(preflight.CHECKS))
    assert str(failure).startswith(expected)


def test_a_silent_node_is_a_failure():
    (failure,) = preflight.judge("n2", NodePlan(), None, TRTLLM, set(preflight.CHECKS))
    assert failure.check == "preflight" and "printed nothing" in failure.problem


def test_without_tensorrt_llm_on_the_node_the_shipped_key_list_judges(tmp_path):
    config = tmp_path / "prefill.yaml"
    config.write_text("max_batch_size: 1\nenable_padding_typo: true\n")
    plan = NodePlan(validate={str(config): "prefill-0"})
    facts = {**FACTS, "validated": {str(config): {"validator": None, "why": "ModuleNotFoundError: tensorrt_llm"}}}
    (failure,) = preflight.judge("n1", plan, facts, TRTLLM, set(preflight.CHECKS))
    assert failure.check == "engine-config-keys" and "'enable_padding_typo': unknown key" in failure.problem
    assert "tensorrt_llm is not importable on n1: ModuleNotFoundError" in failure.problem
    assert "shipped list from TensorRT-LLM" in failure.problem


def versions(*found: str | None) -> dict[str, dict]:
    return {f"n{i}": {"dynamo": v} for i, v in enumerate(found, 1)}


def test_the_probed_dynamo_release_wins_and_a_declared_one_that_differs_is_reported():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preflight.dynamo_release(versions("1.4.2", "1.4.2"), TRTLLM, None) == ("1.4.2", [])
        assert preflight.dynamo_release(versions("1.6.1"), TRTLLM, "1.6") == ("1.6.1", [])
    with pytest.warns(preflight.PreflightWarning, match=r"--dynamo-version=1.6 was given, but the nodes run Dynamo "
                                                        r"0.6.0: the dynamo.trtllm workers get its flags \(argv shape "
                                                        r"0.4\)"):
        assert preflight.dynamo_release(versions("0.6.0"), TRTLLM, "1.6") == ("0.6.0", [])


@pytest.mark.parametrize(("found", "problem"), [
    (("1.4.2", None), "no Dynamo (ai-dynamo) in the Python the services run"),
    (("1.4.2", "1.6.1"), "the nodes run different Dynamo releases: n1 1.4.2, n2 1.6.1"),
    (("0.3.2",), "Dynamo 0.3.2 predates the multinode TRT-LLM scripts"),
])
def test_dynamo_release_problems(found, problem):
    version, failures = preflight.dynamo_release(versions(*found), TRTLLM, None)
    assert version is None and [f.check for f in failures] == ["dynamo-version"]
    assert problem in failures[0].problem


def test_failure_text():
    assert str(Failure("node2", "model", "gone", "copy it")) == "node2: model: gone; fix: copy it"


def test_declared_dynamo_version(pytester, monkeypatch):
    monkeypatch.delenv("DYNAMO_VERSION", raising=False)
    assert declared(pytester.parseconfig(), "dynamo_version") is None
    assert declared(pytester.parseconfig("--dynamo-version=1.4.2"), "dynamo_version") == "1.4.2"
    monkeypatch.setenv("DYNAMO_VERSION", "1.3.1")
    assert declared(pytester.parseconfig(), "dynamo_version") == "1.3.1"
    pytester.makeini("[pytest]\ndynamo_version = 0.4.1\n")
    assert declared(pytester.parseconfig(), "dynamo_version", environ={}) == "0.4.1"


# ------------------------------------------------------------------------------------------ local step


def local_check(settings: Settings, tmp_path: Path) -> Settings:
    launcher = LocalLauncher(run_label="preflight-test")
    plan, wiring = wired(settings, launcher, tmp_path)
    return preflight.check(settings, plan, wiring, launcher, run_dir=tmp_path, declared_version=None)


def test_local_preflight_passes_and_probes_this_dynamo(tmp_path):
    checked = local_check(Settings(), tmp_path)
    assert checked.dynamo_version == "1.4.2"  # the pinned ai-dynamo of the embedded default
    record = json.loads((tmp_path / "preflight.json").read_text())
    assert record["failures"] == [] and record["checks"] == sorted(preflight.applicable(Settings()))


def slow_python(tmp_path: Path, seconds: float) -> str:
    """An interpreter that takes `seconds` to start, as an image's first step takes to import."""
    wrapper = tmp_path / "slow-python"
    wrapper.write_text(f"#!/bin/sh\nsleep {seconds}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_slow_preflight_step_reports_progress_and_times_out_naming_its_phase(tmp_path):
    launcher = LocalLauncher(run_label="preflight-test")
    spec = {"nodes": {}, "model": "", "gpus": False, "dynamo": True}
    lines: list[str] = []
    phase = Phase("image import + preflight", 5, "--preflight-timeout", lines.append, every=0.5)
    facts = preflight.run_probe(launcher, slow_python(tmp_path, 1.6), spec, 1, tmp_path / "preflight.log", phase)
    assert facts, "the probe answered once it started"
    assert len(lines) >= 2 and all(re.fullmatch(
        r"pytest-llama4: image import \+ preflight: \d+s of 5s \(--preflight-timeout\), the check step on "
        r"127\.0\.0\.1 has not finished \(the first step in an image imports it\)", line) for line in lines), lines
    short = Phase("image import + preflight", 0.5, "--preflight-timeout")
    with pytest.raises(PreflightError, match=r"^image import \+ preflight did not finish within 0.5s "
                                             r"\(--preflight-timeout\): the check step is still running"):
        preflight.run_probe(launcher, slow_python(tmp_path, 30), spec, 1, tmp_path / "preflight.log", short)


def test_local_preflight_stops_on_a_held_port_and_a_missing_model(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PreflightError) as raised:
            local_check(Settings(http_port=port, model=str(tmp_path / "absent")), tmp_path)
    message = str(raised.value)
    assert message.startswith("preflight found problems; nothing was launched:")
    assert f"127.0.0.1: ports: --http-port={port}: the port is already in use on 127.0.0.1" in message
    assert f"127.0.0.1: model: {tmp_path / 'absent'} (--model/MODEL_PATH) is not readable there" in message
    assert "--skip-preflight=CHECK" in message and str(tmp_path / "preflight.log") in message


HUB_ID = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"


def test_a_hub_id_model_must_be_in_the_nodes_cache_or_come_with_a_token(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))  # the probe step inherits it, as a node's step does
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(PreflightError) as raised:
        local_check(Settings(model=HUB_ID), tmp_path)
    assert (f"127.0.0.1: model: {HUB_ID} (--model/MODEL_PATH) is a hub id that is not in 127.0.0.1's Hugging Face "
            f"cache ({home / 'hub'}), and there is no token (HF_TOKEN, or a token file in HF_HOME) for a gated "
            "model; fix: download it once") in str(raised.value)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with pytest.warns(preflight.PreflightWarning, match="every node downloads it at start"):
        local_check(Settings(model=HUB_ID), tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    (home / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / "abc123").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local_check(Settings(model=HUB_ID), tmp_path)  # in the cache: nothing to say


def test_skip_all_runs_no_step(tmp_path):
    assert local_check(Settings(skip_preflight="all", model=str(tmp_path / "absent")), tmp_path).dynamo_version == "1.6"
    assert not (tmp_path / "preflight.log").exists()


# ------------------------------------------------------------------------------------ real SLURM cluster

@pytest.fixture
def cluster():
    require_slurm()


def expect_stopped(result: subprocess.CompletedProcess, reports: Path, job: str, *lines: str) -> str:
    """The run failed in preflight with `lines` in its message, launched nothing and left nothing."""
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    for line in lines:
        assert line in out, out[-3000:]
    assert "Traceback" not in out
    (run_id,) = run_ids(reports)
    assert not (reports / run_id / "logs").exists(), "no service was launched"
    assert steps_of(job) == [], "steps left in squeue -s"
    assert_nothing_left(reports)
    return out


@pytest.mark.integration
@pytest.mark.slurm
def test_slurm_preflight_stops_on_a_planned_port_already_taken(tmp_path, cluster, request):
    slurm_env = request.getfixturevalue("allocation")(2)
    (tmp_path / "test_up.py").write_text("def test_up(deployment):\n    pass\n")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_inner(tmp_path, inner_env(slurm_env), f"--http-port={port}", "test_up.py")
    expect_stopped(result, tmp_path, slurm_env["SLURM_JOB_ID"],
                   f"gpu-a01: ports: --http-port={port}: the port is already in use on gpu-a01; fix: stop what holds "
                   "it (`ss -ltnp` on gpu-a01) or pass --http-port=0 to pick a free port")


STAND_IN = '''\
"""Stands in for TensorRT-LLM's LLM-API args: a strict pydantic model, as TorchLlmArgs is (extra="forbid")."""
from pydantic import BaseModel, ConfigDict


class TorchLlmArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    skip_tokenizer_init: bool = False
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    tensor_parallel_size: int = 1
'''


@pytest.mark.integration
@pytest.mark.slurm
def test_slurm_preflight_stops_on_a_key_the_engine_rejects(tmp_path, tmp_path_factory, cluster, request):
    """The check step validates the prefill config with the nodes' own `tensorrt_llm` (here a stand-in on the
    PYTHONPATH the step sees, behind `python3`, as in the image), and names the key it rejects."""
    aside = tmp_path_factory.mktemp("aside")
    package = aside / "site" / "tensorrt_llm"
    (package / "llmapi").mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "0.0.0+standin"\n')
    (package / "llmapi" / "__init__.py").write_text("")
    (package / "llmapi" / "llm_args.py").write_text(STAND_IN)
    (aside / "bin").mkdir()
    (aside / "bin" / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (aside / "bin" / "python3").chmod(0o755)
    (aside / "model").mkdir()
    prefill, decode = aside / "prefill.yaml", aside / "decode.yaml"
    prefill.write_text("max_batch_size: 1\nmax_num_tokenz: 8192\ntensor_parallel_size: 4\n")  # 4 GPUs per node
    decode.write_text("max_batch_size: 256\ntensor_parallel_size: 4\n")
    env = inner_env(request.getfixturevalue("allocation")(2))
    env |= {"PYTHONPATH": str(aside / "site"), "PATH": f"{aside / 'bin'}:{env['PATH']}"}
    (tmp_path / "test_up.py").write_text("def test_up(deployment):\n    pass\n")
    result = run_inner(tmp_path, env, "--engine=dynamo-trtllm", "--topology=disagg", f"--model={aside / 'model'}",
                       f"--prefill-engine-config={prefill}", f"--decode-engine-config={decode}",
                       "--skip-preflight=gpus", "test_up.py")
    out = expect_stopped(result, tmp_path, env["SLURM_JOB_ID"],
                         f"gpu-a01: engine-config-keys: prefill-0's engine config {prefill}: 'max_num_tokenz': Extra "
                         "inputs are not permitted (TorchLlmArgs of tensorrt_llm 0.0.0+standin on gpu-a01); fix: "
                         f"remove or rename 'max_num_tokenz' (`pytest-llama4 lint-config {prefill}` suggests the "
                         "spelling), or --skip-preflight=engine-config-keys")
    assert "decode-0's engine config" not in out


CLUSTER_CONF = """\
ClusterName=preflight
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation={root}/state
SlurmctldPidFile={root}/slurmctld.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdSpoolDir={root}/spool/%n
SlurmdPidFile={root}/slurmd-%n.pid
SlurmdLogFile={root}/slurmd-%n.log
NodeName=pf1 NodeHostname=localhost NodeAddr=127.0.0.1 Port={port1} CPUs={cpus} RealMemory=1000
NodeName=pf2 NodeHostname=localhost NodeAddr=127.0.0.1 Port={port2} CPUs={cpus} RealMemory=1000
PartitionName=p Nodes=pf[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


@pytest.fixture
def node_local_cluster(tmp_path, cluster):
    """A second 2-node cluster of the same SLURM (scripts/slurm-local's recipe, on ports of its own) whose node pf2 has
    a node-local directory: its slurmd runs in a private mount namespace with an empty tmpfs over `local/`, so what
    the host puts there exists on pf1 and not on pf2, as on a cluster where a model was staged on one node's disk.
    (The shared cluster's nodes see one filesystem and differ only in environment variables, which the engines do
    not expand in paths: only a real per-node filesystem makes an honest test.) Yields (client env, local dir)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a node-local directory needs root and unshare(1)")
    root, local = tmp_path / "cluster", tmp_path / "local"
    for path in (root / "state", root / "spool", local):
        path.mkdir(parents=True)
    conf = root / "slurm.conf"
    ports = {"ctld_port": free_port(), "port1": free_port(), "port2": free_port()}
    conf.write_text(CLUSTER_CONF.format(root=root, cpus=os.cpu_count(), **ports))
    env = {**inner_env({}), "SLURM_CONF": str(conf)}
    try:
        subprocess.run(["slurmctld", "-i", "-f", conf], env=env, check=True, timeout=30)
        subprocess.run(["slurmd", "-f", conf, "-N", "pf1"], env=env, check=True, timeout=30)
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f'mount -t tmpfs node-local "{local}" && exec slurmd -f "{conf}" -N pf2'],
                       env=env, check=True, timeout=30)
        deadline = time.monotonic() + 30
        while slurm_out(env, "sinfo", "-h", "-o", "%T").split() != ["idle"] and time.monotonic() < deadline:
            time.sleep(0.2)
        yield env, local
    finally:
        for job in slurm_out(env, "squeue", "-h", "-o", "%i").split():
            subprocess.run(["scancel", job], env=env, check=False)
        pids = [int(p.read_text()) for p in root.glob("*.pid")]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def slurm_out(env: dict[str, str], *argv: str) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False).stdout


@pytest.mark.integration
@pytest.mark.slurm
def test_slurm_preflight_stops_on_a_model_missing_on_node2_only(tmp_path, node_local_cluster):
    env, local = node_local_cluster
    model = local / "maverick"
    model.mkdir()
    (model / "config.json").write_text("{}")
    granted = subprocess.run(["salloc", "--no-shell", "-N2", "--job-name=llama4-tests"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stderr
    job = granted.split("Granted job allocation ")[1].split()[0]
    env |= {"SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": "pf[1-2]"}
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "test_up.py").write_text("def test_up(deployment):\n    pass\n")
    result = run_inner(reports, env, "--topology=disagg", f"--model={model}", "test_up.py")
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert (f"pf2: model: {model} (--model/MODEL_PATH) is not readable there: No such file or directory; fix: put "
            "it at that path on pf2, e.g. on a filesystem every node mounts, or point --model/MODEL_PATH at a path "
            "every node sees") in out, out[-3000:]
    assert "pf1: model" not in out and "Traceback" not in out
    (run_id,) = run_ids(reports)
    assert not (reports / run_id / "logs").exists(), "no service was launched"
    assert slurm_out(env, "squeue", "-h", "-s", "-j", job, "-o", "%i %j").strip() == "", "steps left in squeue -s"
    assert_nothing_left(reports)


def test_pmix_is_found_in_what_srun_lists():
    listed = "MPI plugin types are...\n\tpmix\n\tnone\n\tpmi2\nspecific pmix plugin versions available: pmix_v4\n"
    assert preflight.pmix_listed(listed)
    assert preflight.pmix_listed("MPI plugin types are...\n\tnone\n\tpmix_v3\n")
    assert not preflight.pmix_listed("MPI plugin types are...\n\tnone\n\tpmi2\n\tcray_shasta\n")


def test_a_slurm_without_pmix_is_a_preflight_failure_naming_the_fix(monkeypatch):
    monkeypatch.setattr(preflight, "slurm", lambda *argv: "MPI plugin types are...\n\tnone\n\tpmi2\n")
    (failure,) = preflight.mpi_failures(SlurmLauncher(Allocation("1", ("gb-01",)), "r"))
    assert str(failure).startswith("srun: mpi: srun offers no pmix MPI plugin (`srun --mpi=list`: none pmi2), and "
                                   "the workers' steps run --mpi=pmix; fix: ask the cluster's admins")
    assert preflight.mpi_failures(LocalLauncher("r")) == []
