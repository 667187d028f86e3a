"""Provenance: what a run ran on, so that a result can be traced to the software and hardware behind it.

At the end of the session the process that writes junit.xml (pytest itself, or the xdist controller) writes
`reports/<run-id>/provenance.json`, adds the same facts to junit.xml as `provenance.*` testsuite properties, and
puts a short header in the terminal summary. Every fact is a non-empty value: "none" where there is nothing (no
GPU, no image, no SLURM job), "not reported (why)" where it could not be learnt, "unknown" where git cannot say.

What the deployment's machines run (Dynamo, TensorRT-LLM and Python versions; GPUs, driver and CUDA per node) is
probed where the services run, right after the deployment is launched (`probe_environment`): an allocation
requested with --slurm-alloc is gone by the end of the session. A session that launched nothing probes at its end.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import pynvml

from ..config import resolve
from ..config.paths import PROJECT_ROOT
from ..config.settings import Settings
from ..config.topology import Service
from ..deploy import services
from ..deploy.engines import engine_for
from ..deploy.launchers import needs_allocation, node_runner
from ..deploy.launchers.allocation import Allocation
from ..deploy.launchers.base import Launcher, StepError, brief

FILE = "provenance.json"
PREFIX = "provenance."
NONE = "none"
PROBE_TIMEOUT_S = 300.0  # the first pyxis step on a node imports the image, which can take minutes
ENDPOINT = "not reported (--endpoint: the deployment's machines are not ours to inspect)"
# Printed as JSON by the interpreter the services run, inside the image where there is one.
VERSIONS_SCRIPT = """
import importlib.metadata as m, json, platform
def version(*names):
    for name in names:
        try:
            return m.version(name)
        except m.PackageNotFoundError:
            pass
    return "not installed"
print(json.dumps({"dynamo": version("ai-dynamo"), "tensorrt_llm": version("tensorrt_llm", "tensorrt-llm"),
                  "python": platform.python_version()}))
"""
VERSION_NAMES = {"dynamo": "Dynamo", "tensorrt_llm": "TensorRT-LLM", "python": "Python"}
# One task per node: `<node>|gpu|<name>, <driver>` per GPU, `<node>|cuda|<version>`, then `<node>|end|`.
GPUS_SCRIPT = (
    'n=$SLURMD_NODENAME; '
    'nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed "s/^/$n|gpu|/"; '
    'nvidia-smi 2>/dev/null | sed -n "s/.*CUDA Version: *\\([0-9.]*\\).*/$n|cuda|\\1/p"; '
    'echo "$n|end|"')
NO_GPU = {"gpus": NONE, "driver": NONE, "cuda": NONE}


class ProbeError(Exception):
    """A probe could not run; the message says what ran and what it printed."""


# --- the plugin -------------------------------------------------------------------------------------------


def plugin_version() -> str:
    try:
        return metadata.version("pytest-llama4")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_revision(root: Path = PROJECT_ROOT) -> str:
    """The commit of the checkout the plugin runs from, marked when tracked files differ from it; "unknown" when the
    plugin is not a git checkout of its own (an installed copy inside someone else's repository included)."""
    try:
        top, head = _git(root, "rev-parse", "--show-toplevel", "HEAD").split()
        if Path(top).resolve() != root.resolve():
            return "unknown"
        changed = _git(root, "status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (uncommitted changes)" if changed else head


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


# --- the image --------------------------------------------------------------------------------------------


def image_facts(settings: Settings) -> dict[str, str]:
    """pyxis/enroot report no digest of their own: the reference itself may pin one (`...@sha256:...`)."""
    if not settings.launches:
        return {"reference": ENDPOINT, "digest": ENDPOINT}
    if not settings.image:
        return {"reference": NONE, "digest": NONE}
    _, pinned, digest = settings.image.partition("@")
    return {"reference": settings.image,
            "digest": digest if pinned and digest.startswith("sha256:") else "not reported"}


# --- where the services run -------------------------------------------------------------------------------


def probe_versions(settings: Settings, runner: Launcher, timeout: float = PROBE_TIMEOUT_S) -> dict[str, str]:
    """Dynamo, TensorRT-LLM and Python versions as the services see them: one step on the head node (this machine
    for local processes; on SLURM an `srun --overlap` step, inside the image when there is one), running the
    interpreter the engine's services run (the mocker: this one; cluster engines: `python3`)."""
    interpreter = engine_for(settings.engine).python(settings)
    try:
        out = _probe(runner, (interpreter, "-c", VERSIONS_SCRIPT), runner.nodes[:1], "versions", timeout,
                     in_image=True)
        return {name: str(value) for name, value in json.loads(out.splitlines()[-1]).items()}
    except (ProbeError, IndexError, ValueError, AttributeError) as error:
        return dict.fromkeys(VERSION_NAMES, f"not reported ({error})")


def probe_gpus(runner: Launcher, timeout: float = PROBE_TIMEOUT_S) -> dict[str, dict]:
    """GPU names, driver and CUDA version per node: NVML on this machine for local processes, or one step with a
    task on every node (nvidia-smi comes with the node's driver: no image needed)."""
    if runner.runs_here:
        return {socket.gethostname(): nvml_gpus()}
    try:
        return parse_gpus(_probe(runner, ("sh", "-c", GPUS_SCRIPT), runner.nodes, "gpus", timeout), runner.nodes)
    except ProbeError as error:
        return dict.fromkeys(runner.nodes, f"not reported ({error})")


def nvml_gpus() -> dict:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return dict(NO_GPU)  # no driver, or no NVML library: no GPU this run can use
    try:
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040 for 12.4
        return {"gpus": names or NONE, "driver": pynvml.nvmlSystemGetDriverVersion() or NONE,
                "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else NONE}
    finally:
        pynvml.nvmlShutdown()


def parse_gpus(output: str, nodes: tuple[str, ...]) -> dict[str, Any]:
    """GPUS_SCRIPT's lines, gathered per node; a node that never said `end` is reported as such."""
    found: dict[str, dict] = {}
    for line in output.splitlines():
        node, _, rest = line.partition("|")
        kind, _, value = rest.partition("|")
        if node not in nodes:
            continue  # not one of the script's lines
        facts = found.setdefault(node, {"gpus": [], "driver": NONE, "cuda": NONE})
        if kind == "gpu":
            name, _, driver = value.rpartition(", ")
            facts["gpus"].append(name.strip())
            facts["driver"] = driver.strip() or NONE
        elif kind == "cuda" and value.strip():
            facts["cuda"] = value.strip()
    return {node: {**found[node], "gpus": found[node]["gpus"] or NONE} if node in found
            else "not reported (the probe printed nothing for this node)" for node in nodes}


def _probe(runner: Launcher, argv: tuple[str, ...], nodes: tuple[str, ...], name: str, timeout: float, *,
           in_image: bool = False) -> str:
    """A one-shot step's stdout; ProbeError when it could not run, saying what ran and what it printed."""
    try:
        step = runner.run_on_nodes(argv, nodes, name=name, in_image=in_image)
        done = step.finish(timeout)
    except StepError as error:
        raise ProbeError(str(error)) from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ProbeError(f"{brief(step.argv)} exited {done.returncode}: {said[0]}")
    return done.stdout


def environment(settings: Settings, runner: Launcher | None) -> dict[str, Any]:
    """The facts only the deployment's machines know; `runner` runs steps there (None: an --endpoint)."""
    if runner is None:
        return {"versions": dict.fromkeys(VERSION_NAMES, ENDPOINT), "gpus": ENDPOINT, "slurm": NONE}
    slurm = ({"job_id": runner.allocation.job_id, "nodelist": ",".join(runner.nodes),
              "addresses": runner.allocation.addresses()} if runner.allocation is not None else NONE)
    return {"versions": probe_versions(settings, runner), "gpus": probe_gpus(runner), "slurm": slurm}


def run_environment(settings: Settings, allocation: Allocation | None, run_label: str) -> dict[str, Any]:
    """`environment` of a run, from its settings and `allocation`, where it runs (launcher=slurm)."""
    if needs_allocation(settings) and allocation is None:
        why = "not reported (no deployment was launched in the --slurm-alloc allocation)"
        return {"versions": dict.fromkeys(VERSION_NAMES, why), "gpus": why, "slurm": why}
    return environment(settings, node_runner(settings, run_label, allocation))


# --- the run's own files ----------------------------------------------------------------------------------


def service_facts(settings: Settings, run_dir: Path) -> dict[str, Any] | str:
    """Each launched service's argv and environment, as services.json records them (secrets redacted)."""
    if not settings.launches:
        return ENDPOINT
    records = services.read(run_dir)
    return {r.name: {"role": r.role, "nodes": list(r.nodes), "argv": list(r.argv), "env": r.env or NONE}
            for r in records} or f"{NONE} (no deployment was launched)"


def engine_config_facts(settings: Settings, run_dir: Path) -> dict[str, Any] | str:
    """The file each worker reads and its sha256: the mocker's resolved JSON in the report; a cluster engine's
    config as the worker sees it (a container path is hashed through MOUNTS on the host)."""
    if not settings.launches:
        return ENDPOINT
    facts = {}
    for worker in settings.plan.workers:
        path, on_host = _worker_config(settings, run_dir, worker)
        if path is not None:
            readable = on_host is not None and on_host.is_file()
            facts[worker.name] = {"path": str(path), "sha256": resolve.sha256_of(on_host) if readable else
                                  "not reported (not readable here: inside the image, or gone)"}
    return facts or f"{NONE} (no deployment was launched)"


def _worker_config(settings: Settings, run_dir: Path, worker: Service) -> tuple[Path | None, Path | None]:
    """The engine config path as the worker reads it, and where that file is on this machine."""
    if engine_for(settings.engine).writes_engine_configs:
        resolved = run_dir / "engine_configs" / f"{worker.name}.json"  # written at launch
        return (resolved, resolved) if resolved.is_file() else (None, None)
    return worker.engine_config, settings.engine_config_on_host(worker)


def collect(settings: Settings, run_id: str, run_dir: Path, env: dict[str, Any]) -> dict[str, Any]:
    """Every fact of provenance.json: `env` holds what only the deployment's machines know (`environment`)."""
    return {
        "run_id": run_id,
        "replay_of": resolve.recorded_run_id(settings.replay) if settings.replay else NONE,
        "plugin": {"version": plugin_version(), "git_revision": git_revision()},
        "image": image_facts(settings),
        **env,
        "services": service_facts(settings, run_dir),
        "engine_configs": engine_config_facts(settings, run_dir),
    }


def properties(facts: dict[str, Any], prefix: str = PREFIX) -> dict[str, str]:
    """Flat `provenance.a.b` -> text, for JUnit; an argv is one copy-pasteable shell line."""
    flat: dict[str, str] = {}
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= properties(value, f"{name}.")
        elif isinstance(value, list):
            flat[name] = shlex.join(value) if key == "argv" else ", ".join(map(str, value))
        else:
            flat[name] = str(value)
    return flat


def header(facts: dict[str, Any]) -> list[str]:
    """The terminal summary's lines: what ran, in what, on what."""
    plugin, image, versions = facts["plugin"], facts["image"], facts["versions"]
    commit, _, marks = plugin["git_revision"].partition(" ")
    revision = f"{commit[:12]} {marks}".strip()
    software = ", ".join(f"{label} {versions[key]}" for key, label in VERSION_NAMES.items())
    slurm = facts["slurm"]
    job = f"SLURM job {slurm['job_id']} ({slurm['nodelist']})" if isinstance(slurm, dict) else f"SLURM: {slurm}"
    digest = f" (digest {image['digest']})" if image["digest"] not in (NONE, image["reference"]) else ""
    return [f"provenance: pytest-llama4 {plugin['version']} at git {revision}; {software}",
            f"image: {image['reference']}{digest}; {job}",
            f"GPUs: {gpu_summary(facts['gpus'])}"]


def gpu_summary(gpus: dict[str, Any] | str) -> str:
    if isinstance(gpus, str):
        return gpus
    parts = []
    for node, facts in gpus.items():
        if isinstance(facts, str) or facts["gpus"] == NONE:
            parts.append(f"{node}: {facts if isinstance(facts, str) else NONE}")
            continue
        counts = ", ".join(f"{n}x {name}" for name, n in Counter(facts["gpus"]).items())
        parts.append(f"{node}: {counts} (driver {facts['driver']}, CUDA {facts['cuda']})")
    return "; ".join(parts)


def replay_comparison(facts: dict[str, Any], replayed: Path) -> str:
    """Whether a replay's workers read the same engine configs, by sha256, as the run it replays."""
    original = replayed / FILE
    run_id = facts["replay_of"]
    try:
        theirs = json.loads(original.read_text())["engine_configs"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"engine configs not compared with run {run_id}: {original} is missing or unreadable"
    ours = facts["engine_configs"]
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return f"engine configs: {ours} (run {run_id}: {theirs})"
    differ = sorted(name for name in ours.keys() | theirs.keys()
                    if (ours.get(name) or {}).get("sha256") != (theirs.get(name) or {}).get("sha256"))
    if differ:
        return f"engine configs DIFFER from run {run_id}'s (sha256): {', '.join(differ)}"
    return f"engine configs: identical to run {run_id}'s (sha256 of {', '.join(sorted(ours))})"
