"""Is the deployment ready? Every planned worker registered, the served model listed, one token served.

`/v1/models` can list a model before it can serve (Dynamo #2296), so readiness ends with a one-token chat
probe, as Dynamo's own tests do. `/health` bodies are always read: older Dynamo answers 200 "unhealthy".
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import openai
import requests

from ..config.topology import Plan
from .phases import Phase

PROBE_TIMEOUT = 5.0
# What a client raises when the server is gone, through requests or the OpenAI SDK (httpx).
CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, openai.APIConnectionError)


def answers(base_url: str, timeout: float = 3.0) -> bool:
    """Does the deployment answer at all? One quick GET of /v1/models."""
    try:
        requests.get(f"{base_url}/v1/models", timeout=timeout)
    except requests.RequestException:
        return False
    return True


@dataclass(frozen=True)
class Readiness:
    ready: bool
    missing: tuple[str, ...]  # one line per thing still missing, for the timeout message
    missing_roles: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()  # "prefill 1/1" for each worker role with all its planned instances


def registered_components(health: Mapping) -> Counter[str]:
    """Worker instances per Dynamo component, counting each instance's `generate` endpoint once."""
    instances = health.get("instances") or []
    return Counter(i.get("component") for i in instances if isinstance(i, Mapping) and i.get("endpoint") == "generate")


def missing_workers(plan: Plan, health: Mapping, component_of: Mapping[str, str]) -> list[tuple[str, str]]:
    """(role, explanation) for every worker role with fewer registered instances than planned."""
    return [(role, f"{role} worker(s): /health lists {listed} of {planned} planned instance(s) of component "
                   f"{component!r}")
            for role, component, listed, planned in worker_counts(plan, health, component_of) if listed < planned]


def worker_counts(plan: Plan, health: Mapping, component_of: Mapping[str, str]) -> list[tuple[str, str, int, int]]:
    """(role, component, instances /health lists, instances planned) for each worker role of the plan."""
    registered = registered_components(health)
    planned = Counter(component_of[w.role] for w in plan.workers)
    return [(role, component_of[role], registered[component_of[role]], planned[component_of[role]])
            for role in dict.fromkeys(w.role for w in plan.workers)]


def served_models(models: Mapping) -> list[str]:
    return [m.get("id") for m in models.get("data") or [] if isinstance(m, Mapping)]


def check_once(session: requests.Session, base_url: str, plan: Plan | None, served_model: str,
               component_of: Mapping[str, str], time_left: float, lists_models: bool = True) -> Readiness:
    """One round of readiness checks. `plan` is None for an endpoint we did not launch; `component_of` is empty
    for an engine without Dynamo's instance list."""
    timeout = max(0.5, min(PROBE_TIMEOUT, time_left))
    registered: tuple[str, ...] = ()
    try:
        if plan is not None and component_of:  # a Dynamo frontend lists its workers' instances
            health = session.get(f"{base_url}/health", timeout=timeout).json()
            missing = missing_workers(plan, health, component_of)
            registered = tuple(f"{role} {listed}/{planned}" for role, _, listed, planned
                               in worker_counts(plan, health, component_of) if listed >= planned)
            if missing:
                return Readiness(False, tuple(m for _, m in missing), tuple(r for r, _ in missing), registered)
        if not lists_models:  # trtllm-serve's disaggregated proxy has no /v1/models: its /health, then the probe
            health = session.get(f"{base_url}/health", timeout=timeout)
            if health.status_code != 200:
                return Readiness(False, (f"{base_url}/health answers HTTP {health.status_code}",), ("frontend",))
            return _probe(session, base_url, served_model, plan, max(0.5, time_left))
        listed = served_models(session.get(f"{base_url}/v1/models", timeout=timeout).json())
        if served_model not in listed:
            return Readiness(False, (f"/v1/models lists {listed}, not the served model {served_model!r}",),
                             registered=registered)
    except (requests.RequestException, ValueError) as error:
        return Readiness(False, (f"the API at {base_url} not answering: {type(error).__name__}",), ("frontend",))
    return dataclasses.replace(_probe(session, base_url, served_model, plan, max(0.5, time_left)),
                               registered=registered)


def _probe(session: requests.Session, base_url: str, served_model: str, plan: Plan | None,
           timeout: float) -> Readiness:
    """Registered and listed is not serving: one token must come back."""
    workers = tuple(dict.fromkeys(w.role for w in plan.workers)) if plan else ()
    try:
        probe = session.post(f"{base_url}/v1/chat/completions", timeout=timeout, json={
            "model": served_model, "max_tokens": 1, "messages": [{"role": "user", "content": "ready?"}]})
    except requests.RequestException as error:
        return Readiness(False, (f"the workers are registered but a one-token chat probe got no answer "
                                 f"({type(error).__name__})",), workers)
    if probe.status_code != 200:
        return Readiness(False, (f"a one-token chat probe answered HTTP {probe.status_code}: {probe.text[:200]}",),
                         workers)
    return Readiness(True, ())


def wait_until_ready(check: Callable[[float], Readiness], phase: Phase, on_poll: Callable[[], None],
                     describe: Callable[[Readiness], str], interval: float = 0.25) -> Readiness:
    """Poll until ready or the phase's budget is spent; `check` gets the seconds it may take (what is left, and
    with progress lines no more than one interval, so a probe that hangs does not silence them), `on_poll` raises
    if a service died. The phase reports `describe(latest state)` each progress interval."""
    while True:
        on_poll()
        state = check(min(phase.left(), phase.every) if phase.reports else phase.left())
        if state.ready or phase.over():
            return state
        phase.tick(functools.partial(describe, state))
        time.sleep(interval)


def roles_to_blame(state: Readiness, roles: Sequence[str]) -> list[str]:
    """Whose logs explain a timeout: the missing roles that run, or everyone when nothing more specific is known (a
    standalone server is its own frontend: an API not answering there is the worker's to explain)."""
    return [r for r in state.missing_roles if r in roles] or list(roles)
