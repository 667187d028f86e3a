"""TensorRT-LLM's own OpenAI server, `trtllm-serve`: aggregated, or context + generation servers behind
`trtllm-serve disaggregated`. Pure functions; every flag comes from one of these upstream sources:

[T1] The seed guide (seeds/002, TensorRT-LLM examples/models/core/llama4/README.md in its first form):
     `trtllm-serve nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8 --backend pytorch --max_batch_size 1024
     --tp_size 8 --ep_size 8 --trust_remote_code --extra_llm_api_options ./extra-llm-api-config.yml`.
     (Later forms of that README, e.g. @ 000a01de66f0eab4ab05640711f0253f50f5209c, use `--max_batch_size 512` and
     add `--num_postprocess_workers 2`; the defaults here stay the seed's.)
[T2] NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py, older form @ 4c05a74891e4df8066f08ed4ce14b0972abe4e25:
     `--host` (default "localhost"), `--port` (8000), `--backend` (pytorch|tensorrt|_autodeploy, alias trt),
     `--max_batch_size`, `--tp_size`, `--ep_size`, `--kv_cache_free_gpu_memory_fraction` (0.9),
     `--trust_remote_code` (a flag), `--extra_llm_api_options` (YAML applied after the CLI values, so it wins).
     Newer form @ 00209af149e7774406881a37283dce303571eb11: the same spellings still parse, as aliases:
     `--tensor_parallel_size/--tp_size`, `--moe_expert_parallel_size/--ep_size`,
     `--free_gpu_memory_fraction/--kv_cache_free_gpu_memory_fraction`, `--config/--extra_llm_api_options`.
     The seed's spellings are therefore used: they parse in both.
     `trtllm-serve disaggregated`: `-c/--config_file`, `-t/--server_start_timeout` (180 s), `-r/--request_timeout`
     (180 s), the same in both forms.
[T3] tensorrt_llm/llmapi/disagg_utils.py @ 0228a71223416496ff056a157936bad2e42c762f (`extract_disagg_cfg`,
     `extract_ctx_gen_cfgs`): top-level `hostname` (default "localhost", the address the proxy binds), `port`
     (8000), `context_servers` / `generation_servers` each `{num_instances, urls}` where every url is `host:port`
     (split on ':', no scheme) and `num_instances` must equal the number of urls; any other top-level key is copied
     into both sections.
[T4] examples/disaggregated/README.md @ 013971245ed5ddb230f1917dd8ccce711a17280f: each context/generation server
     is a plain `trtllm-serve <model> --host ... --port <own port> --backend pytorch --extra_llm_api_options
     <its own YAML>` (context YAML with `disable_overlap_scheduler: True` and `cache_transceiver_config`), then
     `trtllm-serve disaggregated -c disagg_config.yaml` with `hostname`, `port`, `backend: pytorch`,
     `context_servers`, `generation_servers`. The context/generation servers are `server_command`s here.
[T5] examples/disaggregated/slurm/simple_example/launch.slurm @ 14e6b10f48d9bd8cc9fc04d1480f7a29e08b16cb: on SLURM
     each server is `srun --mpi=pmix --ntasks-per-node=<GPUs> ... trtllm-llmapi-launch trtllm-serve <model>
     --tp_size N --host 0.0.0.0 --port P --config <yaml>`: one MPI task per GPU, rank 0 serving HTTP. A single
     `trtllm-serve` task instead spawns its own ranks through MPI_Comm_spawn, which fails inside SLURM steps
     (ai-dynamo/dynamo PR #808), hence `tasks_per_node`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ...config.topology import DECODE, PREFILL, WORKER, Plan, Service
from .base import Command, Wiring
from .parallelism import check_ranks

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ..launchers.base import Launcher
    from .control_plane import Discovery

SEED_MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"  # [T1]
LAUNCHER = "trtllm-llmapi-launch"  # [T5]
PROMETHEUS_PATH = "/prometheus/metrics"  # its Prometheus text; /metrics is JSON iteration stats
BACKEND = "pytorch"  # [T1], [T4]


def _check_bind_address(host: str, what: str) -> None:
    if not host or host == "localhost":
        raise ValueError(f"{what} must be 0.0.0.0 or the node's address, not {host!r}: trtllm-serve's default "
                         "'localhost' is unreachable from other nodes")


def server_command(
    model: str,
    *,
    host: str,
    port: int,
    extra_llm_api_options: str,
    tp_size: int = 8,
    ep_size: int = 8,
    max_batch_size: int = 1024,
    kv_cache_free_gpu_memory_fraction: float | None = None,
    tasks_per_node: int = 1,
    env: Mapping[str, str] | None = None,
) -> Command:
    """The seed's `trtllm-serve` line [T1] flag for flag, plus `--host`/`--port` [T2] (always explicit: the default
    host is localhost). Also a disaggregated context or generation server [T4]: give it its own port and YAML.

    `tasks_per_node` > 1 runs it as [T5] does on SLURM: `trtllm-llmapi-launch trtllm-serve ...`, one MPI task per
    GPU (`tasks_per_node` = GPUs per node, `tp_size` = tasks in total). With 1 it is the seed's single process,
    which starts its own ranks (fine on a workstation, not inside a SLURM step).
    """
    _check_bind_address(host, "host")
    if tasks_per_node < 1:
        raise ValueError(f"tasks_per_node must be at least 1, not {tasks_per_node}")
    argv = ["trtllm-serve", model,
            "--backend", BACKEND,
            "--max_batch_size", str(max_batch_size),
            "--tp_size", str(tp_size),
            "--ep_size", str(ep_size),
            "--trust_remote_code",
            "--extra_llm_api_options", extra_llm_api_options,
            "--host", host,
            "--port", str(port)]
    if kv_cache_free_gpu_memory_fraction is not None:
        argv += ["--kv_cache_free_gpu_memory_fraction", str(kv_cache_free_gpu_memory_fraction)]
    mpi = tasks_per_node > 1
    if mpi:
        argv.insert(0, LAUNCHER)
    # its Prometheus text is /prometheus/metrics: /metrics is JSON iteration stats, drained by every read
    return Command(tuple(argv), dict(env or {}), tasks_per_node=tasks_per_node, mpi=mpi, gpus_per_node=tasks_per_node,
                   metrics_port=port, metrics_path=PROMETHEUS_PATH)


def _server_url(url: str) -> str:
    host, sep, port = url.partition(":")
    if not sep or ":" in port or not port.isdigit() or not host or "/" in host:
        raise ValueError(f"disaggregated server url {url!r} must be host:port, without a scheme [T3]")
    if host == "localhost":
        raise ValueError(f"disaggregated server url {url!r}: use the node's address, not localhost")
    return url


def disaggregated_config(
    *, hostname: str, port: int, context_urls: Sequence[str], generation_urls: Sequence[str]
) -> dict:
    """The YAML document for `trtllm-serve disaggregated -c` [T3], [T4]: the proxy binds `hostname:port` and
    sends each request's prefill to a context server and its decode to a generation server."""
    _check_bind_address(hostname, "hostname")
    if not context_urls or not generation_urls:
        raise ValueError("disaggregated serving needs at least one context and one generation server")
    return {
        "hostname": hostname,
        "port": port,
        "backend": BACKEND,
        "context_servers": {"num_instances": len(context_urls), "urls": [_server_url(u) for u in context_urls]},
        "generation_servers": {"num_instances": len(generation_urls),
                               "urls": [_server_url(u) for u in generation_urls]},
    }


def disaggregated_command(
    config_path: str, *, server_start_timeout: int | None = None, request_timeout: int | None = None
) -> Command:
    """`trtllm-serve disaggregated -c <config>` [T2], [T4]: one process, no MPI. It gives up if the context and
    generation servers are not healthy within `-t` seconds (180 by default): loading Maverick takes longer, so
    start it after them or pass a larger `server_start_timeout`."""
    argv = ["trtllm-serve", "disaggregated", "-c", config_path]
    if server_start_timeout is not None:
        argv += ["-t", str(server_start_timeout)]
    if request_timeout is not None:
        argv += ["-r", str(request_timeout)]
    return Command(tuple(argv))


class TrtllmServeEngine:
    """TensorRT-LLM's own OpenAI server: one `trtllm-serve` per worker, and the `trtllm-serve disaggregated` proxy
    in the frontend's place. Rendered (--dry-run) and tested at an --endpoint; not launched by pytest-llama4 yet."""

    name = "trtllm-serve"
    needs_gpus = True
    launchers = ("slurm",)
    runs_dynamo = False
    config_format = "llm-api-yaml"
    deterministic_text = True
    drafts_tokens = True
    publishes_kv_usage = False  # only with enable_iter_perf_stats
    default_profile = None
    default_startup_timeout = 1800.0  # as dynamo-trtllm: the same engine loads the same weights
    writes_engine_configs = False
    serves_model_path = True  # the releases read have no --served_model_name

    def health_components(self, dynamo_version: str) -> Mapping[str, str]:
        return {}  # no Dynamo frontend: its /health is an empty 200, no instance list

    def lists_models(self, plan: Plan | None) -> bool:
        return plan is None or plan.topology == "agg"  # the disaggregated proxy has no /v1/models

    def draft_counters_missing(self, dynamo_version: str) -> str | None:
        return None  # /prometheus/metrics, or the /metrics iteration stats

    def draft_counters_unpublished(self, dynamo_version: str) -> str | None:
        return None  # its own TensorRT-LLM's version is not known here: absent counters are a fault

    def check(self, settings: Settings) -> None:
        """Its engine configs must ask for as many ranks as the plan gives each worker GPUs."""
        check_ranks(settings, default_tp_is_planned=True)

    def default_engine_config(self, service: Service) -> Path | None:
        return None

    def default_model(self) -> Path | None:
        return None

    def python(self, settings: Settings) -> str:
        return "python3"

    def release_uses(self, dynamo_version: str) -> str:
        return "the run uses it"  # no Dynamo: preflight does not probe it

    def dry_run_note(self, settings: Settings, base_url: str) -> str:
        return (f"a real run starts these in order (disagg: the proxy once the servers are up) and waits for "
                f"{base_url} to answer a one-token probe; or run them by hand, then pytest --endpoint={base_url} "
                f"--engine={self.name}")

    def wire(self, plan: Plan, settings: Settings, launcher: Launcher, http_port: int, discovery: Discovery | None,
             configs_dir: Path, wiring: Wiring) -> None:
        """Every worker is a `trtllm-serve` of its own, one MPI task per GPU across its nodes [T5]. agg: the worker
        serves the API itself. disagg: the `trtllm-serve disaggregated` proxy takes the frontend's place, started
        after the servers, since it gives up on servers that are not healthy within its start timeout."""
        wiring.model = settings.model or settings.served_model_name
        urls: dict[str, list[str]] = {PREFILL: [], DECODE: []}
        for worker in plan.workers:  # settings guarantee each has its engine config
            port = http_port if worker.role == WORKER else wiring.port_for(worker, launcher)
            if worker.role == WORKER:
                wiring.listen(worker, port)
            ranks = settings.gpus_per_node * worker.node_count
            wiring.engine_configs[worker] = str(worker.engine_config)
            wiring.commands[worker] = server_command(
                wiring.model, host="0.0.0.0", port=port, extra_llm_api_options=str(worker.engine_config),
                tp_size=ranks, ep_size=ranks, tasks_per_node=settings.gpus_per_node)
            urls.get(worker.role, []).append(f"{launcher.node_address(worker)}:{port}")
        if plan.topology == "disagg":
            config = disaggregated_config(hostname="0.0.0.0", port=http_port, context_urls=urls[PREFILL],
                                          generation_urls=urls[DECODE])
            configs_dir.mkdir(parents=True, exist_ok=True)
            config_file = configs_dir / f"{plan.frontend.name}.yaml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            wiring.engine_configs[plan.frontend] = str(config_file)
            wiring.commands[plan.frontend] = disaggregated_command(
                str(config_file), server_start_timeout=int(settings.startup_timeout))
            wiring.listen(plan.frontend, http_port)


ENGINE = TrtllmServeEngine()
