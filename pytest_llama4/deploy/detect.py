"""What answers at an --endpoint, from what the server itself says: `/v1/models` `owned_by` (vLLM's ModelCard says
"vllm", trtllm-serve's "tensorrt_llm", both in their serve protocol modules), `/version` (both serve one), and the
Dynamo frontend's `/health` (it lists the workers' instances). Certain only where the server names itself; a Dynamo
frontend does not say which engine is behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import requests

OWNERS = {"vllm": ("vllm", "vLLM"), "tensorrt_llm": ("trtllm-serve", "trtllm-serve (TensorRT-LLM)")}


@dataclass(frozen=True)
class Detected:
    engine: str | None  # the --engine it certainly is, or None
    description: str  # what answered, and how we know


def detect(base_url: str, served_model: str, timeout: float = 5.0) -> Detected:
    owner = _owner(_json(f"{base_url}/v1/models", timeout), served_model)
    health = _json(f"{base_url}/health", timeout)
    version = _json(f"{base_url}/version", timeout)
    release = f" {version['version']}" if isinstance(version, Mapping) and version.get("version") else ""
    if isinstance(health, Mapping) and isinstance(health.get("instances"), list):
        return Detected(None, f"a Dynamo frontend (its /health lists worker instances); the engine behind it does "
                              f"not say which it is (/v1/models owned_by {owner!r})")
    if owner in OWNERS:
        engine, name = OWNERS[owner]
        return Detected(engine, f"{name}{release} (/v1/models owned_by {owner!r}"
                                f"{', /version' if release else ''})")
    return Detected(None, f"an OpenAI-compatible server that does not name itself (/v1/models owned_by {owner!r})")


def _json(url: str, timeout: float) -> object:
    try:
        return requests.get(url, timeout=timeout).json()
    except (requests.RequestException, ValueError):
        return None


def _owner(models: object, served_model: str) -> str | None:
    data = models.get("data") if isinstance(models, Mapping) else None
    owners = [m.get("owned_by") for m in data or [] if isinstance(m, Mapping) and m.get("id") == served_model]
    return owners[0] if owners else None
