"""How many ranks a TensorRT-LLM LLM-API engine config asks for, against the GPUs the plan gives its worker.

TensorRT-LLM's `Mapping` (tensorrt_llm/mapping.py @ 05ebebb2) refuses any world size but
`tp_size * pp_size * cp_size`; expert parallelism (`moe_expert_parallel_size`) and attention DP split the tensor-
parallel ranks, they add none. A worker runs one rank per GPU on each of its nodes, so the config's product must
equal NUM_GPUS_PER_NODE x the worker's nodes, or the engine fails at start, after the image was pulled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
import yaml

from ...config.topology import DECODE, PREFILL, WORKER, Service

if TYPE_CHECKING:
    from ...config.settings import Settings

RANK_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size")
CONFIG_VAR = {WORKER: "ENGINE_CONFIG", PREFILL: "PREFILL_ENGINE_CONFIG", DECODE: "DECODE_ENGINE_CONFIG"}
NODES_VAR = {WORKER: "NUM_NODES", PREFILL: "NUM_PREFILL_NODES", DECODE: "NUM_DECODE_NODES"}


def check_ranks(settings: Settings, default_tp_is_planned: bool) -> None:
    """A usage error naming the config key and the fix for the first worker role whose engine config asks for
    another number of ranks than the GPUs planned for it. `default_tp_is_planned`: the launcher's command line
    already sets the tensor-parallel size to the planned GPUs (trtllm-serve's --tp_size), so only a config that
    sets it can disagree. Configs this machine cannot read (inside the image) are left to preflight."""
    if not settings.launches:
        return
    seen: set[str] = set()
    for worker in settings.plan.workers:
        if worker.role in seen:
            continue
        seen.add(worker.role)
        problem = _mismatch(settings, worker, default_tp_is_planned)
        if problem:
            raise pytest.UsageError(problem)


def _mismatch(settings: Settings, worker: Service, default_tp_is_planned: bool) -> str | None:
    path = settings.engine_config_on_host(worker)
    if path is None or not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    planned = settings.gpus_per_node * worker.node_count
    defaults = {"tensor_parallel_size": planned if default_tp_is_planned else 1}
    sizes = {key: int(config.get(key) or defaults.get(key, 1)) for key in RANK_KEYS}
    ranks = math.prod(sizes.values())
    if ranks == planned:
        return None
    product = " x ".join(f"{key} {size}" for key, size in sizes.items())
    others = ranks // sizes["tensor_parallel_size"]
    fixes = [f"set tensor_parallel_size: {planned // others} in the config" if planned % others == 0 else None,
             f"NUM_GPUS_PER_NODE={ranks // worker.node_count}" if ranks % worker.node_count == 0 else None,
             f"{NODES_VAR[worker.role]}={ranks // settings.gpus_per_node}" if ranks % settings.gpus_per_node == 0
             else None]
    return (f"{CONFIG_VAR[worker.role]} {worker.engine_config}: {product} = {ranks} ranks, but each {worker.role} "
            f"worker is planned on {worker.node_count} node(s) x {settings.gpus_per_node} GPUs = {planned} "
            f"(NUM_GPUS_PER_NODE x {NODES_VAR[worker.role]}), one rank per GPU: "
            + ", or ".join(f for f in fixes if f))
