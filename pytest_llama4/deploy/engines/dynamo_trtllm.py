"""Dynamo + TensorRT-LLM on a cluster: the frontend and the `dynamo.trtllm` workers, as the seed scripts run them.

Pure functions: each returns the argv + environment of one service; the SLURM launcher wraps it in `srun`
(`Command.tasks_per_node`, `Command.mpi`). Every flag comes from one of these upstream sources:

[S1] ai-dynamo/dynamo components/backends/trtllm/multinode/srun_aggregated.sh and srun_disaggregated.sh
     @ 1cc36a6267f79fd5987e2a48e2d67741dd4d3af2 (same lines in examples/basics/multinode/trtllm/ @ 0c4b7b82):
     `ETCD_ENDPOINTS="${HEAD_NODE_IP}:2379"`, `NATS_SERVER="nats://${HEAD_NODE_IP}:4222"`; workers run as
     `srun --mpi pmix --oversubscribe ... --ntasks-per-node "${NUM_GPUS_PER_NODE}" start_trtllm_worker.sh`;
     `DISAGGREGATION_MODE="prefill_and_decode"` (agg), `prefill` / `decode` and
     `DISAGGREGATION_STRATEGY=decode_first` (disagg); the frontend step passes no task count at all.
[S2] start_trtllm_worker.sh, the seed-era form (ai-dynamo/dynamo components/backends/trtllm/multinode/
     @ 38f0bf04b173669608aee7612609aaeb321a8184; forks luckymrwang/dynamo @ b0762d29, yuekaizhang/dynamo
     @ 12fe3551): `export TRTLLM_USE_UCX_KVCACHE=1` unless TRTLLM_USE_UCX_KVCACHE or TRTLLM_USE_NIXL_KVCACHE is
     set, then `trtllm-llmapi-launch python3 -m dynamo.trtllm --model-path "${MODEL_PATH}" --served-model-name
     "${SERVED_MODEL_NAME}" --extra-engine-args "${ENGINE_CONFIG}" --disaggregation-mode ... --disaggregation-strategy
     ...`. (38f0bf04 itself says `dynamo.trtllm.worker`, a module no released wheel has: every ai-dynamo wheel
     from 0.4.1 to 1.6.1 ships `dynamo/trtllm/__main__.py`, so `-m dynamo.trtllm` it is, for every shape.)
     The newer form (examples/basics/multinode/trtllm/start_trtllm_worker.sh, fork wxsms/dynamo @ 9fa8125c) drops
     the strategy and the UCX export; the UCX export is kept here, see `worker_command`.
[S3] start_frontend_services.sh (components/backends/trtllm/multinode/, fork luckymrwang/dynamo @ 17873e12):
     `python3 -m dynamo.frontend --http-port 8000` after `nats-server -js` and etcd (those two are
     engines/control_plane.py's). The newer ai-dynamo examples/basics/multinode/trtllm/start_frontend_services.sh
     @ 15bb5238 runs plain `python3 -m dynamo.frontend` (port from DYN_HTTP_PORT); `--http-port` is accepted by
     every release checked (0.4.1 dynamo/frontend/main.py, 1.0.0-1.6.1 dynamo/frontend/frontend_args.py) and its
     `--http-host` default is 0.0.0.0, so the frontend is reachable from other nodes without a host flag.
[S4] The worker's own parser, read from the PyPI wheels ai-dynamo==0.4.1, 0.5.1, 0.6.0 (dynamo/trtllm/utils/
     trtllm_utils.py), 0.7.0 (same file), 1.0.0, 1.2.0.post1, 1.3.0.post1, 1.3.1, 1.4.2, 1.6.1
     (dynamo/trtllm/backend_args.py), and checked by parsing this module's argv with each wheel's parser.

The argv shapes (`DYNAMO_SHAPES`, keyed by the first release that has them):
- "0.4" (0.4.x-0.6.x): `--model-path`; `--disaggregation-mode prefill_and_decode|prefill|decode`;
  `--disaggregation-strategy prefill_first|decode_first` (default decode_first) exists, and [S1] sets
  `DISAGGREGATION_STRATEGY=decode_first` for both disagg sides. (It lists the variable in `--container-env` but
  never exports it, so unless the user exported it the worker falls back to the same default.)
- "0.7" (0.7.x-1.2.x): `--disaggregation-strategy` is gone (an error: argparse exit 2 in 0.7-1.0, "Unrecognized
  argument" exit 1 from 1.2); agg is still `prefill_and_decode`. 1.0 renames `--model-path` to `--model` and keeps
  `--model-path` as an alias, so `--model-path` is valid throughout.
- "1.3" (1.3.0-1.6.1): `--disaggregation-mode agg|pd|prefill|decode|encode`, default `agg`. 1.3.x still accepts
  `prefill_and_decode` ("remains accepted temporarily"); 1.4 and later reject it (argparse exit 2), so the seed's
  srun_aggregated.sh no longer starts an aggregated worker there. `--model` is the name (`--model-path` an
  alias). Unknown flags: exit 1. 1.4 and 1.6 differ in no flag used here (1.6 splits
  `--publish-events-and-metrics` into `--publish-kv-events` and `--publish-metrics`, keeping the old one as an
  alias for one release).
Checked by parsing every argv this module builds (3 shapes x 3 roles) with the parser of each wheel in [S4]: each
shape parses on every release of its range; the agg value is the one real incompatibility (the "0.7" agg argv is
rejected from 1.4, the "1.3" one before 1.3); the strategy flag is rejected from 0.7.
No shape gets `--discovery-backend/--request-plane/--event-plane`: they do not exist before 1.0 (0.7 has only
`--store-kv`), and the defaults from 1.0 on (etcd discovery via ETCD_ENDPOINTS, TCP requests) are what the seed
scripts rely on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.topology import DECODE, PREFILL, WORKER, Plan, Service
from .base import Command, Wiring
from .control_plane import preflight_note
from .dynamo_releases import counters_predate, release, release_number
from .parallelism import check_ranks

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ..launchers.base import Launcher
    from .control_plane import Discovery

LAUNCHER = "trtllm-llmapi-launch"  # [S2]: rank 0 runs the command, the other MPI ranks serve the engine
WORKER_MODULE = "dynamo.trtllm"  # [S2], [S4]
FRONTEND_MODULE = "dynamo.frontend"  # [S3]
HTTP_PORT = 8000  # [S3]
UCX_ENV = "TRTLLM_USE_UCX_KVCACHE"  # [S2]
NIXL_ENV = "TRTLLM_USE_NIXL_KVCACHE"  # [S2]


@dataclass(frozen=True)
class WorkerShape:
    """How one range of Dynamo releases spells the worker's flags ([S4])."""

    since: str  # the first ai-dynamo release with this shape
    model_flag: str
    agg_mode: str  # the --disaggregation-mode value of an aggregated worker
    strategy: str | None  # --disaggregation-strategy for prefill/decode; None where the flag does not exist


SHAPES = {
    "0.4": WorkerShape("0.4", "--model-path", "prefill_and_decode", "decode_first"),
    "0.7": WorkerShape("0.7", "--model-path", "prefill_and_decode", None),
    "1.3": WorkerShape("1.3", "--model", "agg", None),
}
DYNAMO_SHAPES = tuple(SHAPES)  # see the module docstring for what differs


def worker_shape(dynamo_version: str) -> WorkerShape:
    """The argv shape for a Dynamo release, e.g. '1.6.1' -> shape '1.3'. Releases before 0.4 are not known."""
    number = release_number(dynamo_version)
    known = [shape for since, shape in SHAPES.items() if release_number(since) <= number]
    if not known:
        raise ValueError(f"Dynamo {dynamo_version} predates the multinode TRT-LLM scripts; use {DYNAMO_SHAPES[0]}+")
    return known[-1]


def frontend_command(http_port: int, env: Mapping[str, str]) -> Command:
    """`python3 -m dynamo.frontend --http-port N` [S3]: one task, never one per GPU (the seed guide's warning)."""
    return Command(("python3", "-m", FRONTEND_MODULE, "--http-port", str(http_port)), dict(env), tasks_per_node=1)


def disaggregation_mode(service: Service, shape: WorkerShape) -> str:
    if service.role == WORKER:
        return shape.agg_mode
    if service.role in (PREFILL, DECODE):
        return service.role
    raise ValueError(f"{service.name} is not a Dynamo TRT-LLM worker (roles: worker, prefill, decode)")


def worker_command(
    service: Service,
    *,
    model_path: str,
    served_model_name: str,
    engine_config: str,
    gpus_per_node: int,
    env: Mapping[str, str],
    dynamo_version: str = "1.6",
    system_port: int | None = None,
) -> Command:
    """One Dynamo TRT-LLM worker (agg `worker`, or `prefill` / `decode`), as [S1] + [S2] start it.

    `engine_config` and `model_path` are paths as the container sees them. The command is one MPI task per GPU on
    every node the worker spans (`srun --mpi pmix --oversubscribe --ntasks-per-node gpus_per_node`, [S1]).
    `env` is the control plane (`control_plane.control_plane_env`) plus any user overrides; like [S2],
    TRTLLM_USE_UCX_KVCACHE=1 is added unless the user chose a KV-cache transport. TensorRT-LLM still honours it
    when the engine config says
    `cache_transceiver_config: {backend: default}` (as the seed's do): it then picks UCX instead of NIXL
    (tensorrt_llm/_torch/pyexecutor/kv_cache_transceiver.py). `system_port` sets DYN_SYSTEM_PORT: the worker
    then serves its own /health, /metrics and model metadata (DESIGN.md section 4); the scripts do not set it.
    """
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be at least 1, not {gpus_per_node}")
    for name, value in (("model_path", model_path), ("served_model_name", served_model_name),
                        ("engine_config", engine_config)):
        if not value:
            raise ValueError(f"{name} is required for {service.name}")
    shape = worker_shape(dynamo_version)
    mode = disaggregation_mode(service, shape)
    argv = [LAUNCHER, "python3", "-m", WORKER_MODULE,
            shape.model_flag, model_path,
            "--served-model-name", served_model_name,
            "--extra-engine-args", engine_config,
            "--disaggregation-mode", mode]
    if shape.strategy and service.role in (PREFILL, DECODE):  # [S1] exports the strategy only for disagg
        argv += ["--disaggregation-strategy", shape.strategy]
    full_env = dict(env)
    if UCX_ENV not in full_env and NIXL_ENV not in full_env:
        full_env[UCX_ENV] = "1"
    if system_port is not None:
        full_env |= {"DYN_SYSTEM_PORT": str(system_port), **release(dynamo_version).system_env}
    metrics_flag = release(dynamo_version).metrics_flag
    argv += [metrics_flag] if metrics_flag and system_port is not None else []
    return Command(tuple(argv), full_env, tasks_per_node=gpus_per_node, mpi=True, gpus_per_node=gpus_per_node)



class DynamoTrtllmEngine:
    """Dynamo's frontend + `dynamo.trtllm` workers, as the seed scripts start them: GPU nodes, SLURM steps."""

    name = "dynamo-trtllm"
    needs_gpus = True
    launchers = ("slurm",)
    runs_dynamo = True
    config_format = "llm-api-yaml"
    deterministic_text = True
    drafts_tokens = True
    publishes_kv_usage = False  # only with the worker's metrics publishing on
    default_profile = None  # a cluster's figures are its own: --profile names them
    default_startup_timeout = 1800.0  # Maverick FP8 on 4 GB200 or 8 H100: many minutes to load and warm up
    writes_engine_configs = False  # the workers read the configs the seed guide's variables name
    serves_model_path = False

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        return release(dynamo_version).components

    def lists_models(self, plan: Plan | None) -> bool:
        return True

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        if release(dynamo_version).metrics_flag:
            return None
        return (f"Dynamo {dynamo_version}'s dynamo.trtllm worker has no bridge for TensorRT-LLM's engine metrics "
                "(no MetricsCollector before 1.0; deploy/engines/dynamo_releases.py): the draft and accepted "
                "counters cannot be read from its metrics endpoint, nor from its log (TensorRT-LLM's print_iter_log "
                "line carries no draft or accepted counts)")

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        return counters_predate(dynamo_version)

    def check(self, settings: Settings) -> None:
        """Its engine configs must ask for as many ranks as the plan gives each worker GPUs."""
        check_ranks(settings, default_tp_is_planned=False)

    def default_engine_config(self, service: Service) -> Path | None:
        return None  # the seed guide's ENGINE_CONFIG variables name them

    def default_model(self) -> Path | None:
        return None

    def python(self, settings: Settings) -> str:
        return "python3"

    def release_uses(self, dynamo_version: str) -> str:
        return f"the dynamo.trtllm workers get its flags (argv shape {worker_shape(dynamo_version).since})"

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        shape = worker_shape(settings.dynamo_version).since
        return preflight_note(f" (argv shape {shape} for --dynamo-version={settings.dynamo_version})")

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery | None,
             configs_dir: Path, wiring: Wiring) -> None:
        """As the seed scripts run it. Engine configs and the model are paths as the container sees them.
        With etcd the seed relies on the workers' defaults; with file discovery the flags must say so (Dynamo 1.0+)."""
        assert discovery is not None  # runs_dynamo: the wiring made one
        flags = discovery.flags if discovery.env.get("DYN_FILE_KV") else ()
        frontend = frontend_command(http_port, discovery.env)
        wiring.commands[plan.frontend] = Command(frontend.argv + flags, frontend.env)
        wiring.listen(plan.frontend, http_port)
        wiring.model = settings.model or settings.served_model_name
        for worker in plan.workers:  # settings guarantee each has its engine config
            wiring.engine_configs[worker] = str(worker.engine_config)
            command = worker_command(
                worker, model_path=wiring.model, served_model_name=settings.served_model_name,
                engine_config=str(worker.engine_config), gpus_per_node=settings.gpus_per_node, env=discovery.env,
                dynamo_version=settings.dynamo_version, system_port=wiring.port_for(worker, launcher))
            wiring.commands[worker] = dataclasses.replace(command, argv=command.argv + flags)


ENGINE = DynamoTrtllmEngine()
