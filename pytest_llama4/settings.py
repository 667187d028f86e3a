"""Run settings: one frozen dataclass resolved from command line, environment and ini, validated once.

Precedence, highest first: command-line option, the seed guide's environment variable, ini key, default.
Every validation failure is a `pytest.UsageError` that says what was wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from .topology import DISCOVERY_MODES

TOPOLOGIES = ("agg", "disagg")
LAUNCHERS = ("local", "slurm", "endpoint")
ENGINES = ("mocker", "dynamo-trtllm", "trtllm-serve")
DEFAULT_SERVED_MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WAIVERS = PROJECT_ROOT / "suites" / "waivers.yaml"


@dataclass(frozen=True)
class Option:
    """One setting: its command-line flag, ini key, seed-guide environment variable and default."""

    flag: str
    help: str
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] | None = None
    kind: str = "string"  # "string", "bool" or "float"/"int" (parsed from strings)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--topology", "deployment shape: agg (one worker) or disagg (prefill + decode workers)", "agg",
           choices=TOPOLOGIES),
    Option("--launcher", "how services start: local processes, SLURM steps, or an existing endpoint", "local",
           choices=LAUNCHERS),
    Option("--endpoint", "base URL of a deployment that is already running (implies --launcher=endpoint)",
           env="LLAMA4_ENDPOINT"),
    Option("--engine", "serving engine behind the OpenAI API", "mocker", choices=ENGINES),
    Option("--model", "model path or hub id (default for the mocker: a tiny built-in tokenizer model)",
           env="MODEL_PATH"),
    Option("--served-model-name", "model name the API serves", DEFAULT_SERVED_MODEL, env="SERVED_MODEL_NAME"),
    Option("--engine-config", "engine config for the aggregated worker", env="ENGINE_CONFIG"),
    Option("--prefill-engine-config", "engine config for prefill workers (disagg)", env="PREFILL_ENGINE_CONFIG"),
    Option("--decode-engine-config", "engine config for decode workers (disagg)", env="DECODE_ENGINE_CONFIG"),
    Option("--prefill-workers", "number of prefill workers (disagg)", "1", kind="int"),
    Option("--decode-workers", "number of decode workers (disagg)", "1", kind="int"),
    Option("--num-nodes", "nodes the aggregated worker spans", "1", env="NUM_NODES", kind="int"),
    Option("--prefill-nodes", "nodes each prefill worker spans", "1", env="NUM_PREFILL_NODES", kind="int"),
    Option("--decode-nodes", "nodes each decode worker spans", "1", env="NUM_DECODE_NODES", kind="int"),
    Option("--gpus-per-node", "GPUs per node, one engine rank each", "4", env="NUM_GPUS_PER_NODE", kind="int"),
    Option("--discovery", "how Dynamo services find each other: a shared directory, or etcd + NATS on the head node",
           "file", choices=DISCOVERY_MODES),
    Option("--dynamo-version", "Dynamo release in the container: picks the worker's argv shape", "1.6",
           env="DYNAMO_VERSION"),
    Option("--image", "slurm: container image for every step (pyxis --container-image)", env="IMAGE"),
    Option("--mounts", "slurm: container mounts, src:dst[,src:dst] (pyxis --container-mounts)", env="MOUNTS"),
    Option("--slurm-alloc", "slurm: request an allocation (salloc) instead of using the one pytest runs in",
           False, kind="bool"),
    Option("--partition", "slurm: partition for --slurm-alloc"),
    Option("--account", "slurm: account for --slurm-alloc"),
    Option("--time", "slurm: time limit for --slurm-alloc", "01:00:00"),
    Option("--http-port", "frontend HTTP port for launched deployments (0 = pick a free one)", "0", kind="int"),
    Option("--speedup-ratio", "mocker: simulated speed-up over real hardware timing (0 = no delay)", "5",
           kind="float"),
    Option("--profile", "hardware profile of throughput floors (fixtures/profiles/NAME.yaml; "
           "default for the mocker: cpu-mocker)"),
    Option("--profile-file", "a profile YAML of your own (wins over --profile)"),
    Option("--baseline", "perf.json of an earlier run: fail on regressions beyond --max-regression"),
    Option("--max-regression", "percent a gated figure may worsen against --baseline", "5", kind="float"),
    Option("--max-error-rate", "percent of a measuring scenario's requests that may fail or end incomplete "
           "before its figures are invalid", "0", kind="float"),
    Option("--golden-file", "speculative suite: greedy outputs of the fixed prompt set, recorded by --record-golden",
           "fixtures/golden/greedy.json"),
    Option("--record-golden", "speculative suite: (re)write --golden-file from this deployment instead of comparing",
           False, kind="bool"),
    Option("--reports-dir", "where reports/<run-id>/ is written", "reports"),
    Option("--keep-deployment", "leave a launched deployment running after the session", False, kind="bool"),
    Option("--startup-timeout", "seconds to wait for the deployment to become ready", "120", kind="float"),
    Option("--waivers", "YAML file of known deviations (xfail strict), or 'none'", str(DEFAULT_WAIVERS)),
    Option("--dry-run", "print every service's full command line, write reports/<run-id>/plan/ (a runnable script "
           "per service, the resolved engine configs), launch nothing", False, kind="bool"),
    Option("--nodelist", "slurm --dry-run outside an allocation: the nodes to plan on (node[1-2] or a,b)"),
    Option("--skip-preflight", "preflight checks to skip before launch, comma-separated, or 'all'"),
    Option("--replay", "run again with exactly the settings and engine configs of reports/<run-id>"),
    Option("--replay-failed", "with --replay: run only the tests that failed in that run", False, kind="bool"),
)


@dataclass(frozen=True)
class Settings:
    topology: str = "agg"
    launcher: str = "local"
    endpoint: str | None = None
    engine: str = "mocker"
    model: str | None = None
    served_model_name: str = DEFAULT_SERVED_MODEL
    engine_config: Path | None = None
    prefill_engine_config: Path | None = None
    decode_engine_config: Path | None = None
    prefill_workers: int = 1
    decode_workers: int = 1
    num_nodes: int = 1
    prefill_nodes: int = 1
    decode_nodes: int = 1
    gpus_per_node: int = 4
    discovery: str = "file"
    dynamo_version: str = "1.6"
    image: str | None = None
    mounts: str | None = None
    slurm_alloc: bool = False
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    http_port: int = 0
    speedup_ratio: float = 5.0
    profile: str | None = None
    profile_file: Path | None = None
    baseline: Path | None = None
    max_regression: float = 5.0
    max_error_rate: float = 0.0
    golden_file: Path = Path("fixtures/golden/greedy.json")
    record_golden: bool = False
    reports_dir: Path = Path("reports")
    keep_deployment: bool = False
    startup_timeout: float = 120.0
    waivers: Path | None = DEFAULT_WAIVERS
    dry_run: bool = False
    nodelist: str | None = None
    skip_preflight: str | None = None
    replay: Path | None = None
    replay_failed: bool = False

    def as_properties(self) -> dict[str, str]:
        """Flat name -> text view, for JUnit properties and the terminal header."""
        return {f.name: "" if getattr(self, f.name) is None else str(getattr(self, f.name)) for f in fields(self)}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("llama4", "Llama 4 deployment qualification (pytest-llama4)")
    for option in OPTIONS:
        env = f" [env {option.env}]" if option.env else ""
        ini = f" [ini {option.dest}]"
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", default=None, help=option.help + ini)
            parser.addini(option.dest, option.help, type="bool", default=option.default)
        else:
            default = f" (default: {option.default})" if option.default is not None else ""
            group.addoption(option.flag, default=None, choices=option.choices, metavar=option.dest.upper(),
                            help=option.help + default + env + ini)
            parser.addini(option.dest, option.help, default=option.default)


def _raw_value(config: pytest.Config, option: Option, environ: dict[str, str]) -> tuple[Any, str]:
    """The winning raw value and where it came from (for error messages)."""
    cli = config.getoption(option.dest)
    if cli is not None:
        return cli, option.flag
    if option.env and environ.get(option.env):
        return environ[option.env], f"environment variable {option.env}"
    ini = config.getini(option.dest)
    if ini not in (None, ""):
        return ini, f"ini key {option.dest}"
    return option.default, option.flag


def _parse(option: Option, raw: Any, source: str) -> Any:
    if raw is None or option.kind == "bool":
        return raw if option.kind != "bool" else bool(raw)
    text = str(raw).strip()
    if option.choices and text not in option.choices:
        raise pytest.UsageError(f"{source}: unknown value {text!r}; choose one of {', '.join(option.choices)}")
    converters: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "string": str}
    try:
        return converters[option.kind](text)
    except ValueError:
        raise pytest.UsageError(f"{source}: expected a number, got {text!r}") from None


def resolve(config: pytest.Config, environ: dict[str, str] | None = None) -> Settings:
    """Build and validate the run's Settings."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw, source = _raw_value(config, option, environ)
        values[option.dest] = _parse(option, raw, source)
        sources[option.dest] = source
    if values["replay"]:
        from . import replay  # replay builds on this module: imported where needed, not in a cycle

        values, sources = replay.recorded_values(config, values)
    return validate(values, sources, Path(config.invocation_params.dir))


def _path_or_none(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _require_engine_configs(values: dict[str, Any]) -> None:
    """GPU workers take their engine config from the seed guide's variables; there is no safe default."""
    needed = ("engine_config",) if values["topology"] == "agg" else ("prefill_engine_config", "decode_engine_config")
    missing = [name.upper() for name in needed if not values[name]]
    if missing:
        raise pytest.UsageError(
            f"--engine={values['engine']} --topology={values['topology']} needs {' and '.join(missing)} (or "
            f"--{missing[0].lower().replace('_', '-')}), e.g. /mnt/engine_configs/llama4/eagle/eagle_"
            f"{'agg' if values['topology'] == 'agg' else 'prefill'}.yaml with MOUNTS=\"$PWD/:/mnt\"")


def host_path(container_path: Path, mounts: str | None) -> Path | None:
    """Where a path inside the container lives on the host, through pyxis mounts `src:dst[:flags],...`;
    None when no mount covers it (then it comes from the image itself)."""
    for mount in (mounts or "").split(","):
        src, _, rest = mount.partition(":")
        dst = rest.split(":")[0]
        if src and dst and container_path.is_relative_to(dst):
            return Path(src) / container_path.relative_to(dst)
    return None


def _check_engine_config(path: Path | None, source: str, image: str | None, mounts: str | None) -> None:
    """The file must exist where the engine will read it: on the host, or in the container through a mount
    (the seed guide passes container paths such as /mnt/engine_configs/...)."""
    if path is None:
        return
    on_host = host_path(path, mounts) if image else path
    if on_host is not None and not on_host.is_file():
        where = f" (mounted from {on_host} on the host, via MOUNTS)" if on_host != path else ""
        raise pytest.UsageError(f"{source}: engine config {path} does not exist{where}; pass an existing file "
                                f"(shipped ones are under {PROJECT_ROOT}/engine_configs)")


def validate(values: dict[str, Any], sources: dict[str, str], base: Path) -> Settings:
    """Cross-field checks and path resolution; `sources` names where each value came from."""
    if values["endpoint"]:
        if sources["launcher"] == "--launcher" and values["launcher"] != "endpoint":
            raise pytest.UsageError(
                f"--endpoint runs against an existing deployment, but --launcher={values['launcher']} asks to "
                "launch one: drop one of the two options")
        if not str(values["endpoint"]).startswith(("http://", "https://")):
            raise pytest.UsageError(f"{sources['endpoint']}: {values['endpoint']!r} is not a URL; "
                                    "use e.g. --endpoint=http://127.0.0.1:8000")
        values["launcher"] = "endpoint"
    elif values["launcher"] == "endpoint":
        raise pytest.UsageError("--launcher=endpoint needs the deployment's URL: add --endpoint=http://HOST:PORT")
    if values["slurm_alloc"] and values["launcher"] != "slurm":
        raise pytest.UsageError("--slurm-alloc requests a SLURM allocation: add --launcher=slurm")
    if values["launcher"] == "slurm" and values["engine"] == "trtllm-serve" and not values["dry_run"]:
        raise pytest.UsageError("--engine=trtllm-serve cannot be launched by pytest-llama4 yet: start it with the "
                                "seed guide's command (--dry-run prints it) and pass --endpoint=http://HEAD_NODE:8000 "
                                "--engine=trtllm-serve")
    if values["image"] and values["launcher"] == "slurm" and values["discovery"] == "file" and \
            values["engine"] != "trtllm-serve":  # trtllm-serve has no discovery
        raise pytest.UsageError("--image with --discovery=file: containers would each need the discovery directory "
                                "mounted; use --discovery=etcd, the seed guide's etcd + NATS on the head node")
    if values["engine"] in ("dynamo-trtllm", "trtllm-serve") and values["launcher"] == "slurm":
        _require_engine_configs(values)
    if not re.match(r"^v?\d+\.\d+", str(values["dynamo_version"])):
        raise pytest.UsageError(f"{sources['dynamo_version']}: {values['dynamo_version']!r} is not a Dynamo release; "
                                "use e.g. --dynamo-version=1.6.1 (see `python3 -m dynamo.frontend --version`)")
    if values["launcher"] == "local" and values["engine"] != "mocker":
        raise pytest.UsageError(
            f"--engine={values['engine']} needs GPU nodes and cannot run as local processes; use --engine=mocker "
            "for the embedded default, or --endpoint=URL for a deployment that is already running")
    for name in ("prefill_workers", "decode_workers", "num_nodes", "prefill_nodes", "decode_nodes", "gpus_per_node"):
        if values[name] < 1:
            raise pytest.UsageError(f"{sources[name]}: needs at least 1, got {values[name]}")
    if values["startup_timeout"] <= 0:
        raise pytest.UsageError(f"{sources['startup_timeout']}: must be a positive number of seconds")
    if not 0 <= values["max_error_rate"] <= 100:
        raise pytest.UsageError(f"{sources['max_error_rate']}: {values['max_error_rate']:g} is not a percentage "
                                "(0-100)")
    if not 0 <= values["http_port"] <= 65535:
        raise pytest.UsageError(f"{sources['http_port']}: {values['http_port']} is not a TCP port (0-65535)")
    for name in ("engine_config", "prefill_engine_config", "decode_engine_config"):
        values[name] = _path_or_none(values[name], base)
        _check_engine_config(values[name], sources[name], values["image"], values["mounts"])
    waivers = values["waivers"]
    values["waivers"] = None if str(waivers).lower() == "none" else _path_or_none(waivers, base)
    if values["waivers"] is not None and not values["waivers"].is_file():
        raise pytest.UsageError(f"{sources['waivers']}: waiver file {values['waivers']} does not exist "
                                "(pass --waivers=none to run without waivers)")
    for name in ("profile_file", "baseline"):
        values[name] = _path_or_none(values[name], base)
        if values[name] is not None and not values[name].is_file():
            raise pytest.UsageError(f"{sources[name]}: {values[name]} does not exist")
    if values["profile"] is None and values["profile_file"] is None and values["engine"] == "mocker":
        values["profile"] = "cpu-mocker"
    values["reports_dir"] = _path_or_none(values["reports_dir"], base)
    values["golden_file"] = _path_or_none(values["golden_file"], base)
    values["replay"] = _path_or_none(values["replay"], base)
    if values["replay_failed"] and values["replay"] is None:
        raise pytest.UsageError("--replay-failed reruns the tests that failed in an earlier run: add "
                                "--replay=reports/<run-id>")
    return Settings(**values)
