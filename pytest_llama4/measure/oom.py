"""Out-of-memory signatures in service logs: the exact texts CUDA, PyTorch, NCCL, TensorRT-LLM and SLURM print
when memory runs out, and a scanner that finds them with file, line number and line.

Every pattern is anchored on text the named source really prints (not on a bare "out of memory", which prompts,
help texts and config comments can contain). Sources were read at the revisions the project's search tool holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..deploy.logtail import plain


@dataclass(frozen=True)
class Signature:
    name: str
    pattern: re.Pattern[str]
    source: str  # where the text comes from, so a reader can check it against their version


def _sig(name: str, regex: str, source: str) -> Signature:
    return Signature(name, re.compile(regex), source)


SIGNATURES: tuple[Signature, ...] = (
    # pytorch/pytorch c10/cuda/CUDACachingAllocator.cpp, DeviceCachingAllocator::malloc:
    #   TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate ", format_size(...), ...)
    _sig("torch-cuda-oom", r"CUDA out of memory\. Tried to allocate",
         "pytorch/pytorch c10/cuda/CUDACachingAllocator.cpp"),
    # pytorch/pytorch torch/cuda/__init__.py: `OutOfMemoryError = torch._C.OutOfMemoryError` (torch.OutOfMemoryError
    # since 2.5; older tracebacks name torch.cuda.OutOfMemoryError).
    _sig("torch-oom-exception", r"\btorch\.(?:cuda\.)?OutOfMemoryError\b", "pytorch/pytorch torch/cuda/__init__.py"),
    # pytorch/pytorch c10/cuda/CUDAException.cpp: C10_CUDA_CHECK raises "CUDA error: " + cudaGetErrorString(err);
    # the CUDA runtime's string for cudaErrorMemoryAllocation (= 2) is "out of memory".
    _sig("cuda-error-oom", r"CUDA error: out of memory", "pytorch/pytorch c10/cuda/CUDAException.cpp"),
    # NVIDIA/TensorRT-LLM cpp/include/tensorrt_llm/common/cudaUtils.h, check():
    #   "[TensorRT-LLM][ERROR] CUDA runtime error in %s: %s" with cudaGetErrorString(result) -> "out of memory"
    _sig("trtllm-cuda-runtime-oom", r"CUDA runtime error in .*: out of memory",
         "NVIDIA/TensorRT-LLM cpp/include/tensorrt_llm/common/cudaUtils.h"),
    # The CUDA runtime / driver error enums by name (cuda_runtime_api driver_types.h, cuda.h), as printed by
    # cuda-python, Dynamo's Rust side and many error paths that print the enum rather than its string.
    _sig("cuda-enum-oom", r"\b(?:cudaErrorMemoryAllocation|CUDA_ERROR_OUT_OF_MEMORY)\b",
         "CUDA runtime API driver_types.h (cudaErrorMemoryAllocation), driver API cuda.h (CUDA_ERROR_OUT_OF_MEMORY)"),
    # NVIDIA/nccl src/include/checks.h: CUDACHECK / CUCHECK: WARN("Cuda failure '%s'") / WARN("Cuda failure %d '%s'")
    _sig("nccl-cuda-oom", r"Cuda failure (?:\d+ )?'out of memory'", "NVIDIA/nccl src/include/checks.h"),
    # cuBLAS status name, as TensorRT-LLM's cudaUtils.h _cudaGetErrorEnum(cublasStatus_t) prints it.
    _sig("cublas-alloc-failed", r"\bCUBLAS_STATUS_ALLOC_FAILED\b",
         "NVIDIA/TensorRT-LLM cpp/include/tensorrt_llm/common/cudaUtils.h"),
    # NVIDIA/TensorRT-LLM cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp, WindowBlockManager::allocateBlock:
    #   TLLM_CHECK_WITH_INFO(hasFreeBlocks(...), "Can't allocate new blocks. No free blocks left.")
    #   (newer: "Can't allocate new blocks for window size %d. No free blocks left.")
    _sig("trtllm-kv-no-free-blocks", r"Can't allocate new blocks(?: for window size \d+)?\. No free blocks left",
         "NVIDIA/TensorRT-LLM cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp"),
    # NVIDIA/TensorRT-LLM tensorrt_llm/_torch/pyexecutor/resource_manager.py, KVCacheManager
    #   .get_max_atten_window_upper_bound: assert ..., "Impossible to fit in any sequence in kvCache"
    _sig("trtllm-kv-no-sequence-fits", r"Impossible to fit in any sequence in kvCache",
         "NVIDIA/TensorRT-LLM tensorrt_llm/_torch/pyexecutor/resource_manager.py"),
    # NVIDIA/TensorRT-LLM cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp (C++ runtime KVCacheManager):
    #   "maxTokensInPagedKvCache (%d) must be large enough to process at least 1 sequence to completion ..."
    _sig("trtllm-kv-pool-too-small", r"maxTokensInPagedKvCache \(\d+\) must be large enough",
         "NVIDIA/TensorRT-LLM cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp"),
    # SchedMD/slurm task/cgroup plugin (task_cgroup_memory.c): "Detected %lu oom_kill event%s in %ps. Some of the
    # step tasks have been OOM Killed." (older releases: "oom-kill event(s)"); srun then says "task N: Out Of Memory".
    _sig("slurm-oom-kill", r"Detected \d+ oom[-_]kill event", "SchedMD/slurm src/plugins/task/cgroup"),
    _sig("srun-task-oom", r"\btask \d+: Out Of Memory\b", "SchedMD/slurm src/srun (task exit reporting)"),
    # CPython: host allocation failure, the last line of its traceback ("MemoryError" or "MemoryError: ...").
    _sig("python-memoryerror", r"^(?:\S+: )?MemoryError(?::|$)", "CPython Objects/exceptions.c (MemoryError)"),
)


@dataclass(frozen=True)
class OomLine:
    path: Path
    line_number: int  # 1-based
    line: str  # without colour codes and trailing newline
    signature: Signature

    def describe(self) -> str:
        return f"{self.path}:{self.line_number}: {self.line}  [{self.signature.name}]"


def match(line: str) -> Signature | None:
    """The first signature the line carries, if any."""
    clean = plain(line)
    return next((s for s in SIGNATURES if s.pattern.search(clean)), None)


def scan_file(path: Path) -> list[OomLine]:
    found = []
    with path.open(encoding="utf-8", errors="replace") as log:
        for number, raw in enumerate(log, 1):
            signature = match(raw)
            if signature is not None:
                found.append(OomLine(path, number, plain(raw).rstrip("\r\n"), signature))
    return found


def scan(paths: Iterable[Path]) -> list[OomLine]:
    """Every out-of-memory line in these log files, in file then line order; missing files are skipped."""
    return [hit for path in paths if path.is_file() for hit in scan_file(path)]


def report(hits: list[OomLine], limit: int = 20) -> str:
    """The failure message: one `file:line: text [signature]` per hit (the first `limit` of them)."""
    lines = [hit.describe() for hit in hits[:limit]]
    if len(hits) > limit:
        lines.append(f"... and {len(hits) - limit} more")
    return "\n".join(lines)
