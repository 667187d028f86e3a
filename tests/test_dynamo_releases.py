"""The Dynamo release table (deploy/engines/dynamo_releases.py) against the released ai-dynamo wheels themselves,
and what each release's worker is started with and waited for."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from pytest_llama4.config.topology import DECODE, PREFILL, WORKER, Service
from pytest_llama4.deploy.engines import dynamo_trtllm
from pytest_llama4.deploy.engines.dynamo_releases import MOCKER_LAUNCH_KEYS, RELEASES_CHECKED, TRTLLM_PINNED, release

WHEELS = Path.home() / ".cache" / "pytest-llama4" / "ai-dynamo-wheels"
# 0.4-0.6: "dyn://dynamo.<component>.generate", later f"dyn://{DYN_NAMESPACE}.<component>.generate"; the first
# worker (agg, or decode under the seed's decode_first strategy) takes DEFAULT_ENDPOINT, the next one (prefill) the
# other (trtllm_utils.py, where it sets args.endpoint).
ENDPOINT = re.compile(r'^DEFAULT_(NEXT_)?ENDPOINT\s*=\s*f?"dyn://[^.]+\.(\w+)\.', re.MULTILINE)
COMPONENT = re.compile(r'^DEFAULT_(ENDPOINT|PREFILL)_COMPONENT\s*=\s*"(\w+)"', re.MULTILINE)


def wheel(version: str) -> zipfile.ZipFile:
    """The released wheel (pip download --no-deps, cached): read as a zip, never installed or imported."""
    found = sorted(WHEELS.glob(f"ai_dynamo-{version}-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"ai-dynamo=={version}",
                               "-d", str(WHEELS)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"pip download ai-dynamo=={version} failed: {done.stderr[-1000:]}"
        found = sorted(WHEELS.glob(f"ai_dynamo-{version}-*.whl"))
    return zipfile.ZipFile(found[0])


def source(archive: zipfile.ZipFile, *paths: str) -> str:
    names = set(archive.namelist())
    return "\n".join(archive.read(p).decode() for p in paths if p in names)


def components_in(archive: zipfile.ZipFile) -> dict[str, str]:
    """Role -> component, as the wheel's own constants say."""
    args = source(archive, "dynamo/trtllm/args.py")
    if args:
        found = dict(COMPONENT.findall(args))
        return {WORKER: found["ENDPOINT"], DECODE: found["ENDPOINT"], PREFILL: found["PREFILL"]}
    found = {bool(nxt): component for nxt, component in ENDPOINT.findall(
        source(archive, "dynamo/trtllm/utils/trtllm_utils.py"))}
    return {WORKER: found[False], DECODE: found[False], PREFILL: found[True]}


def flags_in(archive: zipfile.ZipFile) -> set[str]:
    """Every flag the worker's argument parser defines (argparse add_argument or Dynamo's flag_name= helpers)."""
    text = source(archive, "dynamo/trtllm/utils/trtllm_utils.py", "dynamo/trtllm/args.py",
                  "dynamo/trtllm/backend_args.py")
    return set(re.findall(r'(?:add_argument\(\s*|flag_name=)"(--[a-z-]+)"', text))


def dest_of(archive: zipfile.ZipFile, flag: str) -> str:
    """The config attribute a flag sets: its explicit dest=, else argparse's name for it."""
    text = source(archive, "dynamo/trtllm/utils/trtllm_utils.py", "dynamo/trtllm/args.py",
                  "dynamo/trtllm/backend_args.py")
    call = re.search(rf'(?:add_argument\(\s*|flag_name=)"{flag}"(?P<rest>.*?)(?:flag_name=|add_argument\(|\Z)',
                     text, re.DOTALL)  # the rest of this flag's definition, up to the next one
    explicit = re.search(r'\bdest="(\w+)"', call["rest"]) if call else None
    return explicit[1] if explicit else flag.lstrip("-").replace("-", "_")


def metrics_gate(archive: zipfile.ZipFile) -> str | None:
    """The config attribute under which the worker creates TensorRT-LLM's MetricsCollector (its engine metrics on
    the worker's metrics endpoint), in workers/llm_worker.py; None where there is no such collector."""
    lines = source(archive, "dynamo/trtllm/workers/llm_worker.py").splitlines()
    for index, line in enumerate(lines):
        if "MetricsCollector(" in line and "Additional" not in line:
            gates = [re.search(r"^\s*if config\.(\w+):", earlier) for earlier in lines[max(0, index - 8):index]]
            found = [gate[1] for gate in gates if gate]
            return found[-1] if found else None
    return None


def mocker_args_nested(archive: zipfile.ZipFile) -> bool:
    """Does the mocker normalize its --extra-engine-args file (1.6: launch keys beside an "engine" object)?"""
    return "_normalize_mocker_config" in source(archive, "dynamo/mocker/config.py")


def mocker_launch_keys(archive: zipfile.ZipFile) -> tuple[str, ...]:
    """The keys build_mocker_engine_args puts beside "engine" (its `config = {key: ... for key in (...)}`)."""
    text = source(archive, "dynamo/mocker/config.py")
    block = re.search(r"config = \{\s*key: getattr\(args, key\)\s*for key in \((?P<keys>[^)]*)\)", text)
    return tuple(re.findall(r'"(\w+)"', block["keys"])) if block else ()


@pytest.mark.parametrize("version", RELEASES_CHECKED)
def test_the_table_agrees_with_the_release(version):
    archive = wheel(version)
    entry = release(version)
    assert entry.components == components_in(archive), f"ai-dynamo {version}: component names"
    assert entry.mocker_args_nested == mocker_args_nested(archive), f"ai-dynamo {version}: mocker file layout"
    if entry.mocker_args_nested:
        assert mocker_launch_keys(archive) == MOCKER_LAUNCH_KEYS, f"ai-dynamo {version}: keys beside 'engine'"
    if entry.metrics_flag:
        assert entry.metrics_flag in flags_in(archive), f"ai-dynamo {version} has no {entry.metrics_flag}"
        assert metrics_gate(archive) == dest_of(archive, entry.metrics_flag), (
            f"ai-dynamo {version}: the engine metrics collector is not gated by {entry.metrics_flag}")
    else:
        assert not {"--publish-metrics", "--publish-kv-events"} & flags_in(archive)
        assert metrics_gate(archive) is None, f"ai-dynamo {version} has an engine metrics collector"


@functools.cache
def trtllm_releases_on_pypi() -> dict[str, list[dict]]:
    """tensorrt-llm's files per version, from PyPI's project JSON (the per-version JSON answers 404 here)."""
    return requests.get("https://pypi.org/pypi/tensorrt-llm/json", timeout=60).json()["releases"]


@pytest.mark.parametrize("version", RELEASES_CHECKED)
def test_the_pinned_tensorrt_llm_is_the_wheels_and_its_pypi_date_is_right(version):
    archive = wheel(version)
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    pinned = re.search(r"^Requires-Dist: tensorrt-llm==([^;\s]+);.*extra == .trtllm.", metadata, re.MULTILINE)
    expected, published = TRTLLM_PINNED[version]
    assert pinned and pinned[1] == expected, f"ai-dynamo {version} pins tensorrt-llm {pinned and pinned[1]}"
    if published is not None:  # PyPI's own upload date of that TensorRT-LLM (its files there are source stubs)
        files = trtllm_releases_on_pypi()[expected]
        assert min(f["upload_time"] for f in files).startswith(published)


def test_counters_are_expected_only_from_a_tensorrt_llm_published_after_them():
    assert dynamo_trtllm.ENGINE.draft_counters_unpublished("1.0.0").startswith(
        "Dynamo 1.0.0 pins TensorRT-LLM 1.3.0rc5.post1 (on PyPI since 2026-03-06), older than")
    assert dynamo_trtllm.ENGINE.draft_counters_unpublished("1.2.0.post1") is None
    assert dynamo_trtllm.ENGINE.draft_counters_unpublished("1.6.1") is None
    assert dynamo_trtllm.ENGINE.draft_counters_unpublished("1.7.0") is None, "an unread release: absence is a fault"


def test_the_contract_test_fails_on_a_wrong_entry():
    archive = wheel("1.2.0.post1")
    assert release("1.2.0.post1").components != components_in(wheel("1.3.1")), "1.2 and 1.3 really differ"
    assert components_in(archive)[PREFILL] == "prefill" and components_in(archive)[WORKER] == "tensorrt_llm"
    assert "--publish-metrics" not in flags_in(archive), "the 1.6 flag must not pass for 1.2"
    assert not mocker_args_nested(archive) and mocker_args_nested(wheel("1.6.1")), "the layouts really differ"


def test_setup_installs_the_newest_release_with_all_its_requirements_but_aisimulate():
    """scripts/setup installs ai-dynamo 1.6.1 with --no-deps (aisimulate installs only from a vendor index), so its
    list of the other requirements must be the wheel's own."""
    metadata = next(n for n in wheel("1.6.1").namelist() if n.endswith(".dist-info/METADATA"))
    required = {re.split(r"[<>=!;\s\[]", line.split(":", 1)[1].strip())[0].lower()
                for line in wheel("1.6.1").read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    setup = (Path(__file__).resolve().parents[1] / "scripts" / "setup").read_text()
    block = setup[setup.index("--no-deps ai-dynamo==1.6.1"):setup.index('touch "$newest/.installed"')]
    installed = {re.split(r"[<>=!]", token.strip('"'))[0].lower() for token in block.split()}
    assert required - {"aisimulate"} <= installed, f"scripts/setup misses {required - installed - {'aisimulate'}}"


@pytest.mark.parametrize(("version", "components", "flag", "env"), [
    ("0.4.1", ("tensorrt_llm", "tensorrt_llm_next"), None, {"DYN_SYSTEM_ENABLED": "true"}),
    ("0.5.1", ("tensorrt_llm", "tensorrt_llm_next"), None, {"DYN_SYSTEM_ENABLED": "true"}),
    ("0.6.0", ("tensorrt_llm", "tensorrt_llm_next"), None, {"DYN_SYSTEM_ENABLED": "true"}),
    ("1.0.0", ("tensorrt_llm", "prefill"), "--publish-events-and-metrics", {}),
    ("1.2.0.post1", ("tensorrt_llm", "prefill"), "--publish-events-and-metrics", {}),
    ("1.3.1", ("backend", "prefill"), "--publish-kv-events", {}),
    ("1.4.2", ("backend", "prefill"), "--publish-kv-events", {}),
    ("1.6.1", ("backend", "prefill"), "--publish-metrics", {}),
])
def test_each_release_gets_its_readiness_names_and_metrics_flag(version, components, flag, env):
    engine = dynamo_trtllm.ENGINE
    assert engine.health_components(version) == {WORKER: components[0], DECODE: components[0],
                                                 PREFILL: components[1]}
    command = dynamo_trtllm.worker_command(Service(PREFILL, 0, 0), model_path="m", served_model_name="m",
                                           engine_config="/c.yaml", gpus_per_node=4, env={}, dynamo_version=version,
                                           system_port=9000)
    assert (flag in command.argv) if flag else not any(a.startswith("--publish") for a in command.argv)
    assert {k: command.env[k] for k in env} == env and command.env["DYN_SYSTEM_PORT"] == "9000"
    assert "DYN_SYSTEM_ENABLED" not in command.env or env


def test_a_release_without_an_engine_metrics_bridge_says_so():
    assert dynamo_trtllm.ENGINE.draft_counters_missing("1.6.1") is None
    assert dynamo_trtllm.ENGINE.draft_counters_missing("1.0.0") is None
    assert dynamo_trtllm.ENGINE.draft_counters_missing("0.6.0").startswith(
        "Dynamo 0.6.0's dynamo.trtllm worker has no bridge for TensorRT-LLM's engine metrics")
