"""Disaggregated serving: every request goes through a prefill and a decode worker, both sides' counters move with
traffic, and losing the prefill side is visible to clients (failed or timed-out requests), never a hang or a
deployment that quietly serves everything from one side."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from pytest_llama4.api.client import REQUEST_TIMEOUT, STALL_TIMEOUT, ApiClient, StreamStalled
from pytest_llama4.config.topology import DECODE, PREFILL
from pytest_llama4.deploy import services
from pytest_llama4.measure import prometheus

pytestmark = pytest.mark.disagg

LOG_FLUSH_SECONDS = 10.0  # workers log a request as it arrives; give their log files this long to show it
DEGRADED_TIMEOUT = 20.0  # a request to a deployment that lost its prefill side must end within this
REQUESTS_COUNTER = "dynamo_component_requests_total"
# One request of each kind a client sends: (path, streamed).
REQUEST_KINDS = [("/v1/chat/completions", False), ("/v1/chat/completions", True),
                 ("/v1/completions", False), ("/v1/completions", True)]


@pytest.fixture(scope="session", autouse=True)  # session: decided before the deployment fixture starts anything
def _disagg_only(llama4_settings):
    if llama4_settings.topology != "disagg":
        pytest.skip(f"the disagg suite checks --topology=disagg deployments; this run is {llama4_settings.topology}")


def _send(api: ApiClient, path: str, streamed: bool, timeout: float = REQUEST_TIMEOUT) -> tuple[int, list[dict]]:
    """(HTTP status, response bodies: the one JSON body, or every streamed chunk)."""
    body = (api.chat_body if "chat" in path else api.completion_body)(max_tokens=8)
    if streamed:
        stream = api.stream(path, body, stall_timeout=min(timeout, STALL_TIMEOUT))
        return stream.status, stream.chunks() if stream.status == 200 else []
    response = api.post(path, body, timeout=timeout)
    return response.status_code, [response.json()] if response.status_code == 200 else []


def _request_id(bodies: list[dict]) -> str | None:
    """Dynamo answers with `chatcmpl-<request id>` / `cmpl-<request id>`; workers log the bare request id."""
    ids = {b.get("id") for b in bodies if b.get("id")}
    return ids.pop().split("-", 1)[1] if len(ids) == 1 else None


def _logged_by(records: list[services.ServiceRecord], request_id: str) -> set[str]:
    return {r.name for r in records if request_id in Path(r.log).read_text(errors="replace")}


def test_every_request_reaches_prefill_and_decode(api, launched_services):
    workers = [r for r in launched_services if r.role in (PREFILL, DECODE)]
    sent = {}
    for path, streamed in REQUEST_KINDS:
        status, bodies = _send(api, path, streamed)
        assert status == 200, f"{path} (stream={streamed}) answered HTTP {status}"
        request_id = _request_id(bodies)
        assert request_id, f"{path} (stream={streamed}): no single response id to trace it by: {bodies[:2]}"
        sent[request_id] = f"{path} stream={streamed}"
    deadline = time.monotonic() + LOG_FLUSH_SECONDS
    while True:
        missing = {rid: _missing_sides(_logged_by(workers, rid), workers) for rid in sent}
        missing = {rid: sides for rid, sides in missing.items() if sides}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, "requests not served by both sides (request id: request, side no worker log shows):\n" + \
        "\n".join(f"  {rid}: {sent[rid]}: no {' or '.join(sides)} worker logged it" for rid, sides in missing.items())


def _missing_sides(logged_by: set[str], workers: list[services.ServiceRecord]) -> list[str]:
    return [role for role in (PREFILL, DECODE)
            if not any(w.name in logged_by for w in workers if w.role == role)]


def _requests_served(records: list[services.ServiceRecord]) -> dict[str, float]:
    counts = {}
    for record in records:
        metrics = prometheus.read(record.metrics_url) if record.metrics_url else None
        assert metrics is not None, f"{record.name}: no Prometheus metrics at {record.metrics_url}"
        counts[record.name] = metrics.get(REQUESTS_COUNTER, 0.0)
    return counts


@pytest.mark.exclusive  # the counters must move by exactly this test's requests
def test_prefill_and_decode_counters_move_with_traffic(api, launched_services):
    workers = [r for r in launched_services if r.role in (PREFILL, DECODE) and r.system_port]
    if not workers:
        pytest.skip("the workers publish no metrics port (DYN_SYSTEM_PORT) in this deployment")
    before = _requests_served(workers)
    for path, streamed in REQUEST_KINDS:
        assert _send(api, path, streamed)[0] == 200, f"{path} (stream={streamed}) failed"
    after = _requests_served(workers)
    moved = {role: sum(after[w.name] - before[w.name] for w in workers if w.role == role) for role in (PREFILL, DECODE)}
    table = "\n".join(f"  {w.name:<12} {w.role:<8} {before[w.name]:>6g} -> {after[w.name]:<6g}" for w in workers)
    assert moved == {PREFILL: len(REQUEST_KINDS), DECODE: len(REQUEST_KINDS)}, (
        f"{len(REQUEST_KINDS)} requests sent; {REQUESTS_COUNTER} moved by {moved[PREFILL]:g} on the prefill side "
        f"and {moved[DECODE]:g} on the decode side:\n{table}")


@pytest.mark.slow
@pytest.mark.exclusive  # a second deployment shares the machine for its duration
def test_losing_prefill_fails_requests_visibly(private_deployments, served_model):
    """Kill the prefill worker of a private copy of this deployment: clients must see errors or time-outs."""
    with private_deployments("prefill-killed") as degraded:
        for handle in degraded.handles:
            if handle.service.role == PREFILL:
                handle.stop(grace=0)
        api = ApiClient(degraded.base_url, served_model)
        started = time.monotonic()
        outcomes = {f"{path} stream={streamed}": _outcome(api, path, streamed) for path, streamed in REQUEST_KINDS}
        elapsed = time.monotonic() - started
    served = {kind: outcome for kind, outcome in outcomes.items() if outcome == "HTTP 200 with a completion"}
    assert not served, ("with every prefill worker killed, requests still completed, so the deployment serves "
                        "without its prefill side and nothing tells clients:\n"
                        + "\n".join(f"  {kind}: {outcome}" for kind, outcome in outcomes.items()))
    assert elapsed < len(REQUEST_KINDS) * (DEGRADED_TIMEOUT + 5), f"failing requests took {elapsed:.0f}s in all"


def _outcome(api: ApiClient, path: str, streamed: bool) -> str:
    try:
        status, bodies = _send(api, path, streamed, timeout=DEGRADED_TIMEOUT)
    except (StreamStalled, requests.Timeout):
        return f"timed out after {DEGRADED_TIMEOUT:g}s"
    except requests.ConnectionError as error:
        return f"connection error ({type(error).__name__})"
    if status != 200:
        return f"HTTP {status}"
    if any("error" in body for body in bodies):
        return "HTTP 200 stream with an error event"
    text = "".join(_text(b) for b in bodies)
    return "HTTP 200 with a completion" if text else "HTTP 200 without any text"


def _text(body: dict) -> str:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or choice.get("delta") or {}
    return choice.get("text") or message.get("content") or ""

