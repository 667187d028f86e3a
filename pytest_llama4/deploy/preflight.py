"""Preflight: after the wiring is known and before any engine starts, one check step on every node of the plan
proves that what the engines will need is there, and probes the Dynamo release that picks the workers' flags.

The step runs through the deployment's launcher (`Launcher.run_on_nodes`: `srun --overlap` over all the plan's nodes,
inside the image when there is one; a local process otherwise), so it sees paths, GPUs, ports and Python exactly as
the services will.
It runs a self-contained script (`PROBE`, standard library only: our package is not on the nodes) that prints one
JSON line of facts per node; the verdicts are made here, each naming the node, the check and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..config.settings import Settings
from ..config.topology import Plan, Service
from . import interrupts
from .engines import engine_for
from .launchers.allocation import SlurmError, slurm
from .launchers.base import Launcher, StepTimeout
from .logtail import framed
from .phases import Phase
from .wiring import Wiring

CHECKS = {
    "model": "the model path is readable on every node of a worker",
    "engine-configs": "every service's engine config is readable where it runs",
    "engine-config-keys": "TensorRT-LLM accepts every key of the engine configs",
    "gpus": "every node has NUM_GPUS_PER_NODE GPUs (GPU engines)",
    "gpu-memory": "no process holds GPU memory yet (GPU engines)",
    "ports": "the planned ports are free on the nodes that bind them",
    "shm": "/dev/shm has room",
    "dynamo-version": "the Dynamo release the services run, which picks the workers' flags",
    "mpi": "srun offers the pmix MPI plugin the workers' steps use (srun --mpi=list)",
}
ALL = "all"
# TensorRT-LLM's MPI ranks, NCCL and the UCX KV-cache transfer stage through /dev/shm; docker's default 64 MiB fails.
SHM_MIN_BYTES = 1 << 30
SERVICE = Service("preflight", 0, node=0)
YAML_SUFFIXES = (".yaml", ".yml")


class PreflightError(Exception):
    """A node cannot run the planned deployment; nothing was launched. The message names node, check and fix."""


class PreflightWarning(UserWarning):
    """Preflight found something worth knowing that does not stop the run."""


# One JSON line of facts for the node this task runs on (SLURMD_NODENAME; a local run has one node).
PROBE = r'''
import json, os, shutil, socket, subprocess, sys
spec = json.loads(sys.argv[1])
name = os.environ.get("SLURMD_NODENAME", "")
if name not in spec["nodes"] and len(spec["nodes"]) == 1:
    name = next(iter(spec["nodes"]))
node = spec["nodes"].get(name, {"paths": [], "ports": [], "validate": []})

def unreadable(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
    except OSError as error:
        return error.strerror or str(error)

def busy(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            sock.bind(("", port))
        except OSError:
            return True
    return False

def smi(*args):
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []

def hub(repo):
    # the Hugging Face hub cache layout: <HF_HUB_CACHE or HF_HOME/hub>/models--ORG--NAME/snapshots/<revision>/
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")
    snapshots = os.path.join(cache, "models--" + repo.replace("/", "--"), "snapshots")
    token = bool(os.environ.get("HF_TOKEN")) or os.path.isfile(os.path.join(home, "token"))
    return {"cached": os.path.isdir(snapshots) and bool(os.listdir(snapshots)), "token": token, "cache": cache}

def dynamo():
    from importlib import metadata
    for dist in ("ai-dynamo", "ai-dynamo-runtime"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass

def validate(path):
    try:
        import yaml, tensorrt_llm
        from pydantic import ValidationError
        from tensorrt_llm.llmapi.llm_args import TorchLlmArgs
    except Exception as error:
        return {"validator": None, "why": f"{type(error).__name__}: {error}"}
    found = {"validator": "tensorrt_llm " + getattr(tensorrt_llm, "__version__", "?"), "errors": []}
    try:
        with open(path) as f:
            TorchLlmArgs(**{"skip_tokenizer_init": True, "model": spec["model"], **(yaml.safe_load(f) or {})})
    except ValidationError as error:
        found["errors"] = [{"key": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()]
    except Exception as error:
        found["errors"] = [{"key": "", "message": f"{type(error).__name__}: {error}"}]
    return found

facts = {"preflight": name, "hostname": socket.gethostname(),
         "unreadable": {p: why for p in node["paths"] if (why := unreadable(p))},
         "busy_ports": [p for p in node["ports"] if busy(p)],
         "shm_free": shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0,
         "dynamo": dynamo() if spec["dynamo"] else None,
         "validated": {p: validate(p) for p in node["validate"]},
         "hub": hub(spec["model"]) if node.get("hub") else None}
if spec["gpus"]:
    facts["gpus"] = sum(1 for line in smi("-L") if line.startswith("GPU "))
    facts["gpu_apps"] = smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader")
print(json.dumps(facts), flush=True)
'''


@dataclass(frozen=True)
class Failure:
    node: str
    check: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.node}: {self.check}: {self.problem}; fix: {self.fix}"


@dataclass
class NodePlan:
    """What one node is asked to prove, and what each path or port stands for (for the messages)."""

    paths: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # path -> (check, what it is)
    ports: dict[int, str] = dataclasses.field(default_factory=dict)  # port -> what binds it
    validate: dict[str, str] = dataclasses.field(default_factory=dict)  # engine config -> the service reading it
    hub_model: bool = False  # a worker loads --model, a hub id, here: is it in the node's Hugging Face cache?

    def spec(self) -> dict:
        return {"paths": list(self.paths), "ports": list(self.ports), "validate": list(self.validate),
                "hub": self.hub_model}


def skipped(settings: Settings) -> frozenset[str]:
    """The checks --skip-preflight names; an unknown name is a usage error."""
    names = {n.strip() for n in (settings.skip_preflight or "").split(",") if n.strip()}
    if ALL in names:
        return frozenset(CHECKS)
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise pytest.UsageError(f"--skip-preflight: unknown check(s) {', '.join(unknown)}; choose from "
                                f"{', '.join(CHECKS)}, or {ALL}")
    return frozenset(names)


def applicable(settings: Settings) -> set[str]:
    """GPU checks for engines that need GPUs, the key check for LLM-API YAML, the release for Dynamo engines."""
    engine = engine_for(settings.engine)
    skip = set() if engine.needs_gpus else {"gpus", "gpu-memory"}
    skip |= set() if engine.config_format == "llm-api-yaml" else {"engine-config-keys"}
    skip |= set() if engine.runs_dynamo else {"dynamo-version"}
    skip |= set() if engine.needs_gpus else {"mpi"}  # GPU engines run one MPI rank per GPU
    return set(CHECKS) - skip


def check(settings: Settings, plan: Plan, wiring: Wiring, launcher: Launcher, *, run_dir: Path,
          declared_version: str | None, progress: Callable[[str], None] | None = None) -> Settings:
    """Run the checks settings do not skip; raise PreflightError naming every failure. Returns the settings to run
    with: `dynamo_version` is the release the nodes run, when probed."""
    checks = applicable(settings) - skipped(settings)
    if not checks:
        return settings
    mpi = mpi_failures(launcher) if "mpi" in checks and any(c.mpi for c in wiring.commands.values()) else []
    nodes = node_plans(settings, plan, wiring, launcher, checks)
    spec = {"nodes": {name: node.spec() for name, node in nodes.items()}, "model": wiring.model,
            "gpus": bool(checks & {"gpus", "gpu-memory"}), "dynamo": "dynamo-version" in checks}
    log_path = run_dir / "preflight.log"  # beside preflight.json: logs/ holds the services' logs only
    phase = Phase("image import + preflight", settings.preflight_timeout, "--preflight-timeout", progress,
                  settings.progress_interval)
    facts = run_probe(launcher, _python(plan, wiring), spec, plan.num_nodes, log_path, phase)
    failures = mpi + [f for name, node in nodes.items() for f in judge(name, node, facts.get(name), settings, checks)]
    version = None
    if "dynamo-version" in checks:
        version, wrong = dynamo_release(facts, settings, declared_version)
        failures += wrong
    (run_dir / "preflight.json").write_text(json.dumps(
        {"checks": sorted(checks), "nodes": facts, "failures": [str(f) for f in failures],
         "dynamo_version": version}, indent=1))
    if failures:
        raise PreflightError(_report(failures, log_path))
    return dataclasses.replace(settings, dynamo_version=version) if version else settings


def mpi_failures(launcher: Launcher) -> list[Failure]:
    """The workers' steps run `srun --mpi=pmix` (the seed scripts' flag); a SLURM without the pmix plugin fails
    them all at once, after the image was pulled. Only SLURM launches MPI steps."""
    if launcher.runs_here:
        return []
    try:
        listing = slurm("srun", "--mpi=list")
    except SlurmError as error:
        return [Failure("srun", "mpi", f"`srun --mpi=list` failed: {error}", "check the SLURM client on this host")]
    if pmix_listed(listing):
        return []
    offered = " ".join(line.strip() for line in listing.splitlines()[1:] if line.strip()) or "nothing"
    return [Failure("srun", "mpi", f"srun offers no pmix MPI plugin (`srun --mpi=list`: {offered}), and the "
                    "workers' steps run --mpi=pmix",
                    "ask the cluster's admins for SLURM's PMIx plugin, or --skip-preflight=mpi if steps get pmix "
                    "another way")]


def pmix_listed(listing: str) -> bool:
    """Whether `srun --mpi=list` lists a pmix plugin ('pmix', 'pmix_v4', ...)."""
    return re.search(r"(?m)^\s*pmix(_v\d+)?\s*$|\bpmix_v\d+\b", listing) is not None


def node_plans(settings: Settings, plan: Plan, wiring: Wiring, launcher: Launcher, checks: set[str]
               ) -> dict[str, NodePlan]:
    """Per node (as the launcher names them): the model on every node of a worker, each engine config and port on
    the service's first node (rank 0 reads the config and binds the ports), configs to validate once each."""
    nodes: dict[str, NodePlan] = {}
    validated: set[str] = set()
    for service in wiring.commands:
        names = launcher.node_names(service)
        for name in names:
            node = nodes.setdefault(name, NodePlan())
            if "model" in checks and service.is_worker and Path(wiring.model).is_absolute():
                node.paths[wiring.model] = ("model", f"{wiring.model} (--model/MODEL_PATH)")
            elif "model" in checks and service.is_worker:  # a hub id: the engine loads it from the node's cache
                node.hub_model = True
        head = nodes[names[0]]
        config = wiring.engine_configs.get(service)
        if config and "engine-configs" in checks:
            head.paths.setdefault(config, ("engine-configs", f"{service.name}'s engine config {config}"))
        if config and "engine-config-keys" in checks and config.endswith(YAML_SUFFIXES) and config not in validated:
            head.validate[config] = service.name
            validated.add(config)
        if "ports" in checks:
            head.ports |= {port: _port_owner(port, service, settings) for port in wiring.listens.get(service, [])}
    return nodes


def _port_owner(port: int, service: Service, settings: Settings) -> str:
    return f"--http-port={port}" if port == settings.http_port else f"port {port} of {service.name}"


def _python(plan: Plan, wiring: Wiring) -> str:
    """The interpreter the services run (this venv's for the mocker, the image's python3 for Dynamo + TensorRT-LLM),
    so the probe sees the Python packages they will."""
    serving = wiring.commands.get(plan.frontend) or wiring.commands[plan.workers[0]]  # a server without frontend
    program = serving.argv[0]
    return program if "python" in Path(program).name else "python3"


def run_probe(launcher: Launcher, python: str, spec: dict, node_count: int, log_path: Path, phase: Phase
              ) -> dict[str, dict]:
    """The check step over all the plan's nodes, inside the image where there is one, always stopped; facts by
    node."""
    nodes = launcher.node_names(dataclasses.replace(SERVICE, node_count=node_count))
    step = launcher.run_on_nodes((python, "-c", PROBE, json.dumps(spec)), nodes, name=SERVICE.name,
                                 log_path=log_path, in_image=True)
    waiting = (f"the check step on {', '.join(nodes) or 'this machine'} has not finished (the first step in an "
               f"image imports it){'' if launcher.runs_here else '; `squeue -s` shows it'}")

    def poll() -> None:
        interrupts.raise_if_received()
        phase.tick(lambda: waiting)

    try:
        output = step.finish(phase.budget, poll=poll).stdout
    except StepTimeout:
        raise PreflightError(f"{phase.timed_out('the check step is still running')}\n"
                             f"{framed('preflight', log_path)}") from None
    facts = {}
    for line in output.splitlines():
        if line.startswith('{"preflight"'):
            entry = json.loads(line)
            facts[entry["preflight"]] = entry
    return facts


def judge(name: str, node: NodePlan, facts: dict | None, settings: Settings, checks: set[str]) -> list[Failure]:
    if facts is None:
        return [Failure(name, "preflight", "the check step printed nothing for this node",
                        "read the log below: the step failed there before checking anything")]
    failures = [_unreadable(name, node.paths[path], why, settings) for path, why in facts["unreadable"].items()]
    failures += [_busy(name, node.ports[port]) for port in facts["busy_ports"]]
    if "shm" in checks and facts["shm_free"] < SHM_MIN_BYTES:
        failures.append(Failure(name, "shm", f"/dev/shm has {facts['shm_free'] / 2**30:.2f} GiB free, less than "
                                             f"{SHM_MIN_BYTES / 2**30:g} GiB",
                                f"free /dev/shm on {name} (files left by an earlier run, e.g. /dev/shm/moe_*), or "
                                "give the container a larger /dev/shm"))
    if "gpus" in checks and "gpus" in facts and facts["gpus"] != settings.gpus_per_node:
        failures.append(Failure(name, "gpus", f"{facts['gpus']} GPU(s) listed by nvidia-smi -L, NUM_GPUS_PER_NODE "
                                              f"is {settings.gpus_per_node}",
                                f"request nodes with {settings.gpus_per_node} GPUs (salloc --gpus-per-node="
                                f"{settings.gpus_per_node}), or set NUM_GPUS_PER_NODE (--gpus-per-node) to what the "
                                "nodes have"))
    if "gpu-memory" in checks and facts.get("gpu_apps"):
        failures.append(Failure(name, "gpu-memory", "processes already hold GPU memory (pid, MiB): "
                                + "; ".join(facts["gpu_apps"]),
                                f"stop them (left by an earlier deployment? `nvidia-smi` on {name}) or wait until "
                                "the node is free"))
    for path, result in facts["validated"].items():
        failures += _rejected_keys(name, path, node.validate[path], result, settings)
    if facts.get("hub"):
        failures += _hub_model(name, settings.model or settings.served_model_name, facts["hub"])
    return failures


def _hub_model(node: str, model: str, hub: dict) -> list[Failure]:
    """A hub id the node's cache lacks is downloaded at start on every node (a warning), or, without a token, fails
    there with a 401 for a gated model such as the seed's Maverick (a failure)."""
    if hub["cached"]:
        return []
    where = f"{model} (--model/MODEL_PATH) is a hub id that is not in {node}'s Hugging Face cache ({hub['cache']})"
    fix = (f"download it once into a cache every node sees (HF_HOME on a shared filesystem, `huggingface-cli "
           f"download {model}`), or point --model at a local path")
    if hub["token"]:
        warnings.warn(PreflightWarning(f"{node}: model: {where}: every node downloads it at start; {fix}"),
                      stacklevel=2)
        return []
    return [Failure(node, "model", f"{where}, and there is no token (HF_TOKEN, or a token file in HF_HOME) for a "
                                   "gated model", f"{fix}, or export HF_TOKEN")]


def _unreadable(node: str, path: tuple[str, str], why: str, settings: Settings) -> Failure:
    check_name, what = path
    where = " (inside the container: mount it with --mounts/MOUNTS)" if settings.image else ""
    fix = (f"put it at that path on {node}{where}, e.g. on a filesystem every node mounts"
           + (", or point --model/MODEL_PATH at a path every node sees" if check_name == "model" else ""))
    return Failure(node, check_name, f"{what} is not readable there: {why}", fix)


def _busy(node: str, owner: str) -> Failure:
    if owner.startswith("--http-port"):
        return Failure(node, "ports", f"{owner}: the port is already in use on {node}",
                       f"stop what holds it (`ss -ltnp` on {node}) or pass --http-port=0 to pick a free port")
    return Failure(node, "ports", f"{owner} is already in use on {node}",
                   f"run again (ports are picked free on this host, and {node} uses this one: `ss -ltnp` there "
                   "shows what holds it)")


def _rejected_keys(node: str, path: str, service: str, result: dict, settings: Settings) -> list[Failure]:
    """TensorRT-LLM's own verdict where it imports on the node; else the shipped key list's, on this host."""
    if result["validator"] is not None:
        where = "in the container" if settings.image else f"on {node}"
        findings = [(e["key"], f"{e['message']} (TorchLlmArgs of {result['validator']} {where})")
                    for e in result["errors"]]
    else:
        findings = _lint_here(path, settings, f"tensorrt_llm is not importable on {node}: {result['why']}")
    return [Failure(node, "engine-config-keys", f"{service}'s engine config {path}: "
                                                + (f"'{key}': " if key else "") + message,
                    (f"remove or rename '{key}'" if key else "correct the file")
                    + f" (`pytest-llama4 lint-config {path}` suggests the spelling), or "
                      "--skip-preflight=engine-config-keys") for key, message in findings]


def _lint_here(path: str, settings: Settings, why: str) -> list[tuple[str, str]]:
    """The fallback: config_lint's key list, on the file as this host sees it (through MOUNTS for an image)."""
    local = settings.on_host(Path(path))
    if local is None or not local.is_file():
        return []  # only the image has it: nothing to lint it against here
    from ..config import lint as config_lint  # the linter's key schema is only needed on this path

    return [(f.key, f"{f.message} ({config_lint.known_keys().source}; {why})")
            for f in config_lint.errors(config_lint.lint_file(local))]


def dynamo_release(facts: dict[str, dict], settings: Settings, declared: str | None
                   ) -> tuple[str | None, list[Failure]]:
    """The one Dynamo release every node runs, and failures for nodes without Dynamo or disagreeing nodes. A release
    other than an explicitly given --dynamo-version is reported; the probed one wins."""
    found = {name: entry["dynamo"] for name, entry in facts.items()}
    failures = [Failure(name, "dynamo-version", "no Dynamo (ai-dynamo) in the Python the services run",
                        "use an image (or environment) with Dynamo, or --skip-preflight=dynamo-version to trust "
                        "--dynamo-version") for name, version in found.items() if version is None]
    releases = sorted({v for v in found.values() if v})
    if len(releases) > 1:
        failures.append(Failure(", ".join(found), "dynamo-version", "the nodes run different Dynamo releases: "
                                + ", ".join(f"{n} {v}" for n, v in found.items()), "run every node on one image"))
    if len(releases) != 1 or failures:
        return None, failures
    (version,) = releases
    try:
        uses = engine_for(settings.engine).release_uses(version)
    except ValueError as error:
        return None, [Failure(", ".join(found), "dynamo-version", str(error), "use a newer image")]
    if declared and not _same_release(declared, version):
        warnings.warn(PreflightWarning(f"--dynamo-version={declared} was given, but the nodes run Dynamo {version}: "
                                       f"{uses}"), stacklevel=2)
    return version, failures


def _same_release(declared: str, probed: str) -> bool:
    """'1.6' names every 1.6.x; '1.6.1' only itself."""
    given, found = re.findall(r"\d+", declared), re.findall(r"\d+", probed)
    return found[:len(given)] == given


def _report(failures: list[Failure], log_path: Path) -> str:
    lines = ["preflight found problems; nothing was launched:", *(f"  {f}" for f in failures),
             f"skip a check that cannot apply with --skip-preflight=CHECK[,CHECK] (or {ALL}); "
             f"the step's log: {log_path}"]
    if any(f.check == "preflight" for f in failures):
        lines.append(framed("preflight", log_path))
    return "\n".join(lines)
