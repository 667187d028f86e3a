"""Run settings: one frozen dataclass resolved from command line, environment and ini, validated once.

Precedence, highest first: command-line option, the seed guide's environment variable, ini key, default.
Every validation failure is a `pytest.UsageError` that says what was wrong and how to fix it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from .paths import DEFAULT_WAIVERS, PROJECT_ROOT
from .topology import DISCOVERY_MODES, Plan, Service, make_plan

TOPOLOGIES = ("agg", "disagg")
LAUNCHERS = ("local", "slurm", "endpoint")
DEFAULT_SERVED_MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"


@dataclass(frozen=True)
class Option:
    """How one setting is given: its command-line flag, ini key, seed-guide environment variable and default.
    Generated from the Settings fields, so that the options table and the settings are one list."""

    dest: str
    help: str
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] | None = None
    kind: str = "string"  # "string", "bool" or "float"/"int" (parsed from strings)

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


def setting(default: Any, help: str, env: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A Settings field that is also an option (flag, ini key, environment variable)."""
    return field(default=default, metadata={"help": help, "env": env, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Every setting of a run. Each field is an option `--<name>` with an ini key `<name>` (see `OPTIONS`)."""

    topology: str = setting("agg", "deployment shape: agg (one worker) or disagg (prefill + decode workers)",
                            choices=TOPOLOGIES)
    launcher: str = setting("local", "how services start: local processes, SLURM steps, or an existing endpoint",
                            choices=LAUNCHERS)
    endpoint: str | None = setting(None, "base URL of a deployment that is already running (implies "
                                   "--launcher=endpoint)", env="LLAMA4_ENDPOINT")
    engine: str = setting("mocker", "serving engine behind the OpenAI API (the registry in deploy/engines/ lists them; "
                                    "an unknown name is an error that lists them too)")
    model: str | None = setting(None, "model path or hub id (default for the mocker: a tiny built-in tokenizer model)",
                                env="MODEL_PATH")
    served_model_name: str = setting(DEFAULT_SERVED_MODEL, "model name the API serves", env="SERVED_MODEL_NAME")
    engine_config: Path | None = setting(None, "engine config for the aggregated worker", env="ENGINE_CONFIG")
    prefill_engine_config: Path | None = setting(None, "engine config for prefill workers (disagg)",
                                                 env="PREFILL_ENGINE_CONFIG")
    decode_engine_config: Path | None = setting(None, "engine config for decode workers (disagg)",
                                                env="DECODE_ENGINE_CONFIG")
    prefill_workers: int = setting(1, "number of prefill workers (disagg)")
    decode_workers: int = setting(1, "number of decode workers (disagg)")
    num_nodes: int = setting(1, "nodes the aggregated worker spans", env="NUM_NODES")
    prefill_nodes: int = setting(1, "nodes each prefill worker spans", env="NUM_PREFILL_NODES")
    decode_nodes: int = setting(1, "nodes each decode worker spans", env="NUM_DECODE_NODES")
    gpus_per_node: int = setting(4, "GPUs per node, one engine rank each", env="NUM_GPUS_PER_NODE")
    discovery: str = setting("file", "how Dynamo services find each other: a shared directory, or etcd + NATS on the "
                             "head node (the default with --image)", choices=DISCOVERY_MODES)
    dynamo_version: str = setting("1.6", "Dynamo release in the container: picks the worker's argv shape",
                                  env="DYNAMO_VERSION")
    engine_python: str | None = setting(None, "without --image: the Python that runs the engine's services (the "
                                        "mocker: a venv with another ai-dynamo release; vllm: a venv with vLLM); "
                                        "default: pytest's own")
    image: str | None = setting(None, "slurm: container image for every step (pyxis --container-image)", env="IMAGE")
    mounts: str | None = setting(None, "slurm: container mounts, src:dst[,src:dst] (pyxis --container-mounts)",
                                 env="MOUNTS")
    slurm_alloc: bool = setting(False, "slurm: request an allocation (salloc) instead of using the one pytest runs in")
    partition: str | None = setting(None, "slurm: partition for --slurm-alloc")
    account: str | None = setting(None, "slurm: account for --slurm-alloc")
    time: str = setting("01:00:00", "slurm: time limit for --slurm-alloc")
    slurm_exclusive: bool = setting(False, "slurm: --slurm-alloc asks for whole nodes (salloc --exclusive)")
    slurm_segment: int | None = setting(None, "slurm: --slurm-alloc asks for nodes in segments of this many "
                                              "(salloc --segment, where the cluster's topology wants it)")
    http_port: int = setting(0, "frontend HTTP port for launched deployments (0 = pick a free one)")
    speedup_ratio: float = setting(5.0, "mocker: simulated speed-up over real hardware timing (0 = no delay)")
    profile: str | None = setting(None, "hardware profile of throughput floors (fixtures/profiles/NAME.yaml; default "
                                  "for the mocker: cpu-mocker)")
    profile_file: Path | None = setting(None, "a profile YAML of your own (wins over --profile)")
    baseline: Path | None = setting(None, "perf.json of an earlier run: fail on regressions beyond --max-regression")
    max_regression: float = setting(5.0, "percent a gated figure may worsen against --baseline")
    max_error_rate: float = setting(0.0, "percent of a measuring scenario's requests that may fail or end incomplete "
                                    "before its figures are invalid")
    golden_file: Path = setting(Path("fixtures/golden/greedy.json"), "speculative suite: greedy outputs of the fixed "
                                "prompt set, recorded by --record-golden")
    record_golden: bool = setting(False, "speculative suite: (re)write --golden-file from this deployment instead of "
                                  "comparing")
    reports_dir: Path = setting(Path("reports"), "where reports/<run-id>/ is written")
    keep_deployment: bool = setting(False, "leave a launched deployment running after the session")
    progress_interval: float = setting(30.0, "seconds between progress lines while the deployment starts and "
                                                "while a scenario measures (0: none; -q: none while measuring)")
    startup_timeout: float = setting(120.0, "seconds the workers get to load and the deployment to become ready "
                                            "(default: 120 for the mocker, the engine's own for GPU engines: 1800)")
    preflight_timeout: float = setting(600.0, "seconds the preflight step gets (the first step in an image imports "
                                              "it on every node)")
    control_plane_timeout: float = setting(60.0, "seconds etcd and NATS get to accept connections")
    waivers: Path | None = setting(DEFAULT_WAIVERS, "YAML file of known deviations (xfail strict), or 'none'")
    dry_run: bool = setting(False, "print every service's full command line, write reports/<run-id>/plan/ (a runnable "
                            "script per service, the resolved engine configs), launch nothing")
    nodelist: str | None = setting(None, "slurm --dry-run outside an allocation: the nodes to plan on (node[1-2] or "
                                   "a,b)")
    skip_preflight: str | None = setting(None, "preflight checks to skip before launch, comma-separated, or 'all'")
    replay: Path | None = setting(None, "run again with exactly the settings and engine configs of reports/<run-id>")
    replay_failed: bool = setting(False, "with --replay: run only the tests that failed in that run")

    def as_properties(self) -> dict[str, str]:
        """Flat name -> text view, for JUnit properties and the terminal header."""
        return {f.name: "" if getattr(self, f.name) is None else str(getattr(self, f.name)) for f in fields(self)}

    @functools.cached_property
    def plan(self) -> Plan:
        """Which services run where: computed once from these settings and kept."""
        return make_plan(self.topology, prefill_workers=self.prefill_workers, decode_workers=self.decode_workers,
                         worker_nodes=self.num_nodes, prefill_nodes=self.prefill_nodes,
                         decode_nodes=self.decode_nodes, engine_config=self.engine_config,
                         prefill_engine_config=self.prefill_engine_config,
                         decode_engine_config=self.decode_engine_config, discovery=self.discovery)

    @property
    def startup_budget(self) -> float:
        """The longest a launch may take in all: preflight, control plane, load and readiness (what an xdist worker
        waits for the controller's deployment)."""
        return self.preflight_timeout + self.control_plane_timeout + self.startup_timeout

    @property
    def launches(self) -> bool:
        """Whether pytest-llama4 starts the deployment (not an --endpoint someone else runs)."""
        return self.launcher != "endpoint"

    def on_host(self, path: Path) -> Path | None:
        """Where this machine reads a file the services read: through MOUNTS when they run in an image (then None
        when no mount covers it: it comes from the image itself), else the path itself."""
        return host_path(path, self.mounts) if self.image else path

    def engine_config_on_host(self, service: Service) -> Path | None:
        """The engine config a worker reads, where this machine can read it (None: it has none, or only the image
        has it)."""
        return None if service.engine_config is None else self.on_host(service.engine_config)


_KINDS = {"bool": "bool", "int": "int", "float": "float"}
OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, f.metadata["help"], f.default, f.metadata["env"], f.metadata["choices"],
           _KINDS.get(str(f.type).removesuffix(" | None"), "string"))
    for f in fields(Settings))


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("llama4", "Llama 4 deployment qualification (pytest-llama4)")
    for option in OPTIONS:
        env = f" [env {option.env}]" if option.env else ""
        ini = f" [ini {option.dest}]"
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", default=None, help=option.help + ini)
            parser.addini(option.dest, option.help, type="bool", default=None)
        else:
            default = f" (default: {option.default})" if option.default is not None else ""
            group.addoption(option.flag, default=None, choices=option.choices, metavar=option.dest.upper(),
                            help=option.help + default + env + ini)
            parser.addini(option.dest, option.help, default="")  # "": not set; the default is the Option's


def in_ini(config: pytest.Config, option: Option) -> bool:
    """Whether the ini file (or `-o`) sets this option's key."""
    return config.getini(option.dest) not in (None, "")


def raw_value(config: pytest.Config, option: Option, environ: dict[str, str]) -> tuple[Any, str]:
    """The winning raw value and where it came from (for error messages)."""
    cli = config.getoption(option.dest)
    if cli is not None:
        return cli, option.flag
    if option.env and environ.get(option.env):
        return environ[option.env], f"environment variable {option.env}"
    if in_ini(config, option):
        return config.getini(option.dest), f"ini key {option.dest}"
    return option.default, default_source(option)


def default_source(option: Option) -> str:
    return f"{option.flag} (default)"


def parse(option: Option, raw: Any, source: str) -> Any:
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


def _path_or_none(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


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


def _check_engine_python(python: str | None, source: str, image: str | None) -> None:
    if python is None:
        return
    if image:
        raise pytest.UsageError(f"{source}: the image brings its own engine and Python; drop --engine-python or "
                                "--image")
    if not os.access(python, os.X_OK) or Path(python).is_dir():
        raise pytest.UsageError(f"{source}: {python} is not an executable Python; pass e.g. "
                                ".venv-dynamo-1.6.1/bin/python (a venv with the engine installed)")


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
    if not re.match(r"^v?\d+\.\d+", str(values["dynamo_version"])):
        raise pytest.UsageError(f"{sources['dynamo_version']}: {values['dynamo_version']!r} is not a Dynamo release; "
                                "use e.g. --dynamo-version=1.6.1 (see `python3 -m dynamo.frontend --version`)")
    _check_engine_python(values["engine_python"], sources["engine_python"], values["image"])
    if values["image"] and sources["discovery"].endswith("(default)"):
        values["discovery"] = "etcd"  # the seed's containerised workflow: containers share no discovery directory
    for name in ("prefill_workers", "decode_workers", "num_nodes", "prefill_nodes", "decode_nodes", "gpus_per_node"):
        if values[name] < 1:
            raise pytest.UsageError(f"{sources[name]}: needs at least 1, got {values[name]}")
    if values["progress_interval"] < 0:
        raise pytest.UsageError(f"{sources['progress_interval']}: must be 0 (no progress lines) or more seconds")
    for name in ("startup_timeout", "preflight_timeout", "control_plane_timeout"):
        if values[name] <= 0:
            raise pytest.UsageError(f"{sources[name]}: must be a positive number of seconds")
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
    values["reports_dir"] = _path_or_none(values["reports_dir"], base)
    values["golden_file"] = _path_or_none(values["golden_file"], base)
    values["replay"] = _path_or_none(values["replay"], base)
    if values["replay_failed"] and values["replay"] is None:
        raise pytest.UsageError("--replay-failed reruns the tests that failed in an earlier run: add "
                                "--replay=reports/<run-id>")
    return Settings(**values)
