"""How long a prompt the deployment's engine config admits: the scheduler's per-iteration token budget and the
longest sequence, read from the engine configs the run will launch with (or was given for an endpoint).

  - TensorRT-LLM LLM-API YAML: `max_num_tokens` (default 8192), `max_seq_len` (default: the model's), and
    `enable_chunked_prefill` (default false: a prompt longer than `max_num_tokens` cannot be scheduled at all).
  - Dynamo mocker JSON: `max_num_batched_tokens`, `max_model_len` (the plugin adds 8192 when the file has none),
    `enable_chunked_prefill` (the mocker's default is true).
  - vLLM arguments: `max-num-batched-tokens`, `max-model-len`, `enable-chunked-prefill` (vLLM's default is true).

Aggregated: the worker's config. Disaggregated: the prefill worker's budget (it takes the prompts), and the
shorter of the two sides' sequence limits (the decode worker holds prompt + output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config.settings import Settings
from ..config.topology import DECODE, PREFILL, WORKER, Service
from .engines import dynamo_mocker, engine_for, vllm_serve

# The seed guide's known issue: `max_num_tokens: 8448` (its max_seq_len) can OOM aggregated serving.
SEED_MAX_NUM_TOKENS = 8448
TRTLLM_DEFAULT_MAX_NUM_TOKENS = 8192  # tensorrt_llm/llmapi/llm_args.py BaseLlmArgs.max_num_tokens
STRESS_OUTPUT_TOKENS = 16  # what each stress prompt generates: the prompt, not the output, fills the budget


@dataclass(frozen=True)
class TokenLimits:
    max_num_tokens: int | None  # tokens one scheduler iteration takes
    max_seq_len: int | None  # prompt + output
    chunked_prefill: bool
    source: str  # the config file(s) the figures come from

    def longest_prompt(self, output_tokens: int) -> int | None:
        """The longest prompt these limits admit with `output_tokens` to generate."""
        bounds = [self.max_seq_len - output_tokens] if self.max_seq_len else []
        if self.max_num_tokens and not self.chunked_prefill:
            bounds.append(self.max_num_tokens)
        return min(bounds) if bounds else None


def stress_cases(limits: TokenLimits, output_tokens: int) -> list[tuple[str, int]]:
    """(id, prompt tokens): prompts filling `max_num_tokens` (clipped to what the sequence limit admits), and the
    seed's 8448 when these limits admit a prompt that long."""
    longest = limits.longest_prompt(output_tokens)
    cases = []
    if limits.max_num_tokens:
        length = min(limits.max_num_tokens, longest) if longest else limits.max_num_tokens
        cases.append((f"max_num_tokens-{limits.max_num_tokens}-prompt-{length}", length))
    if longest and longest >= SEED_MAX_NUM_TOKENS and all(length != SEED_MAX_NUM_TOKENS for _, length in cases):
        cases.append((f"seed-{SEED_MAX_NUM_TOKENS}", SEED_MAX_NUM_TOKENS))
    return cases


def for_settings(settings: Settings) -> TokenLimits | str:
    """The limits of the configs these settings deploy, or why they are not known (a skip reason). Called at
    collection time: a config that cannot be read is a reason, never an error that would stop every suite."""
    try:
        return _for_settings(settings)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as error:
        return f"engine config unreadable: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _for_settings(settings: Settings) -> TokenLimits | str:
    roles = (WORKER,) if settings.topology == "agg" else (PREFILL, DECODE)
    configs = {role: _config_path(settings, role) for role in roles}
    if engine_for(settings.engine).config_format == "mocker-json":
        loaded = {role: dynamo_mocker.engine_args(Service(role, 0, 0, engine_config=path), settings.speedup_ratio)
                  for role, path in configs.items()}
        return _limits(loaded, "max_num_batched_tokens", "max_model_len", chunked_default=True,
                       source=", ".join(str(p or dynamo_mocker.default_engine_config(Service(r, 0, 0)))
                                        for r, p in configs.items()))
    if engine_for(settings.engine).config_format == "vllm-args":
        return _vllm_limits(settings, configs)
    unknown = [role for role, path in configs.items() if path is None]
    if unknown:
        return (f"no engine config for {', '.join(unknown)} (--engine-config / --prefill-engine-config / "
                "--decode-engine-config): max_num_tokens unknown")
    loaded = {}
    for role, path in configs.items():
        readable = settings.on_host(path)
        if readable is None or not readable.is_file():
            return f"engine config {path} is not readable on this machine (inside the image only?)"
        loaded[role] = yaml.safe_load(readable.read_text()) or {}
        loaded[role].setdefault("max_num_tokens", TRTLLM_DEFAULT_MAX_NUM_TOKENS)
    return _limits(loaded, "max_num_tokens", "max_seq_len", chunked_default=False,
                   source=", ".join(str(p) for p in configs.values()))


def _vllm_limits(settings: Settings, configs: dict[str, Path | None]) -> TokenLimits:
    """`vllm serve` arguments: `max-model-len` (default: the model's), `max-num-batched-tokens`, and
    `enable-chunked-prefill` (on by default in vLLM's V1 engine)."""
    engine = engine_for(settings.engine)
    paths = {role: settings.on_host(p) if p else engine.default_engine_config(Service(role, 0, 0))
             for role, p in configs.items()}
    loaded = {role: {k.replace("_", "-"): v for k, v in vllm_serve.read_config(p)[0].items()} if p else {}
              for role, p in paths.items()}
    return _limits(loaded, "max-num-batched-tokens", "max-model-len", chunked_default=True,
                   source=", ".join(str(p) for p in paths.values()))


def _config_path(settings: Settings, role: str) -> Path | None:
    return {WORKER: settings.engine_config, PREFILL: settings.prefill_engine_config,
            DECODE: settings.decode_engine_config}[role]


def _limits(configs: dict[str, dict[str, Any]], budget_key: str, length_key: str, *, chunked_default: bool,
            source: str) -> TokenLimits:
    prompt_side = configs.get(WORKER) or configs[PREFILL]
    lengths = [int(c[length_key]) for c in configs.values() if c.get(length_key)]
    budget = prompt_side.get(budget_key)
    return TokenLimits(int(budget) if budget else None, min(lengths) if lengths else None,
                       bool(prompt_side.get("enable_chunked_prefill", chunked_default)), source)
