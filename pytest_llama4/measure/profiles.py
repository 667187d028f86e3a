"""Hardware profiles: the scenarios a deployment must run and the floors and ceilings it must meet.

A profile is YAML (`fixtures/profiles/<name>.yaml`, or a user's own file):

    name: gb200x4
    description: what it is for, and where every figure comes from
    engines: [dynamo-trtllm]            # the engines its limits were set for
    calibration: {...}                  # free-form facts the figures assume (mocker speed-up, image, ...)
    goodput: {ttft_ms: 2000, tpot_ms: 50}        # SLOs for the goodput figure (optional)
    cross_check: {ttft_mean_tolerance_ms: 25, ttft_mean_tolerance_pct: 50}   # beyond both: the run fails
    memory:                             # the memory suite's limits (optional)
      host_rss_mib: {frontend: 2048, worker: 4096}   # per service role; "default" for the rest
      gpu_memory_used_fraction: 0.97                 # peak used/total per GPU during the heaviest scenario
    speculative:                        # the speculative suite's limits (optional)
      acceptance_length_floor: 2.75                  # mean accepted tokens per draft step, engine's own metric
      decode_speedup_tolerance: 0.5                  # mocker: ITL ratio must reach this share of the ratio set
    scenarios:
      - name: isl1024-osl2048-c1024
        topologies: [agg, disagg]       # default: both
        endpoint: completions           # or chat
        input_tokens: 1024
        output_tokens: 2048
        concurrency: 1024               # or request_rate (req/s) with arrival: poisson|constant
        num_prompts: 8192
        limits:                         # figure -> {floor: x} and/or {ceiling: y}
          output_throughput: {floor: 20000}
          ttft_ms_p99: {ceiling: 5000}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..config.paths import PROFILES_DIR
from .load import Scenario

SCENARIO_KEYS = {"name", "endpoint", "input_tokens", "output_tokens", "concurrency", "request_rate", "arrival",
                 "num_prompts", "warmup", "seed", "ignore_eos"}


@dataclass(frozen=True)
class Limit:
    metric: str
    kind: str  # "floor" (measured >= limit) or "ceiling" (measured <= limit)
    limit: float

    def ok(self, measured: float | None) -> bool:
        if measured is None:
            return False
        return measured >= self.limit if self.kind == "floor" else measured <= self.limit

    def evaluate(self, figures: dict[str, float]) -> dict[str, Any]:
        measured = figures.get(self.metric)
        return {"metric": self.metric, "kind": self.kind, "limit": self.limit, "measured": measured,
                "ok": self.ok(measured)}


@dataclass(frozen=True)
class ProfileScenario:
    scenario: Scenario
    topologies: tuple[str, ...]
    limits: tuple[Limit, ...]


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    engines: tuple[str, ...]
    scenarios: tuple[ProfileScenario, ...]
    goodput: dict[str, float] = field(default_factory=dict)
    cross_check: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    speculative: dict[str, Any] = field(default_factory=dict)

    def scenarios_for(self, topology: str) -> list[ProfileScenario]:
        return [s for s in self.scenarios if topology in s.topologies]


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def resolve(name: str | None, path: Path | None) -> Profile | None:
    """--profile-file wins over --profile; errors are usage errors naming the file and the problem."""
    if path is not None:
        return load(path)
    if name is None:
        return None
    candidate = PROFILES_DIR / f"{name}.yaml"
    if not candidate.is_file():
        raise pytest.UsageError(f"--profile={name}: no such profile; shipped ones: {', '.join(available())} "
                                "(or pass your own with --profile-file=PATH)")
    return load(candidate)


def load(path: Path) -> Profile:
    try:
        data = yaml.safe_load(path.read_text())
        return _parse(data, path)
    except (OSError, yaml.YAMLError) as error:
        raise pytest.UsageError(f"profile {path}: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise pytest.UsageError(f"profile {path}: invalid ({type(error).__name__}: {error}); "
                                f"see {PROFILES_DIR / 'cpu-mocker.yaml'} for the format") from None


CROSS_CHECK_KEYS = {"ttft_mean_tolerance_ms", "ttft_mean_tolerance_pct"}


def _parse(data: dict, path: Path) -> Profile:
    cross_check = dict(data.get("cross_check") or {})
    if "fail" in cross_check:
        raise ValueError("cross_check.fail is no longer read: a client/server disagreement beyond the stated bound "
                         "always fails the run; state the bound this cluster needs in ttft_mean_tolerance_ms and "
                         "ttft_mean_tolerance_pct instead")
    if set(cross_check) - CROSS_CHECK_KEYS:
        raise ValueError(f"cross_check has unknown keys {sorted(set(cross_check) - CROSS_CHECK_KEYS)}")
    scenarios = []
    for entry in data["scenarios"]:
        unknown = set(entry) - SCENARIO_KEYS - {"topologies", "limits"}
        if unknown:
            raise ValueError(f"scenario {entry.get('name')!r} has unknown keys {sorted(unknown)}")
        scenario = Scenario(**{k: v for k, v in entry.items() if k in SCENARIO_KEYS})
        limits = tuple(Limit(metric, kind, float(value))
                       for metric, bounds in (entry.get("limits") or {}).items()
                       for kind, value in bounds.items() if kind in ("floor", "ceiling"))
        scenarios.append(ProfileScenario(scenario, tuple(entry.get("topologies", ("agg", "disagg"))), limits))
    return Profile(data["name"], path, data.get("description", "").strip(), tuple(data.get("engines", ())),
                   tuple(scenarios), dict(data.get("goodput") or {}), cross_check,
                   dict(data.get("calibration") or {}), dict(data.get("memory") or {}),
                   dict(data.get("speculative") or {}))
