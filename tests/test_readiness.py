
from pytest_llama4.config.topology import make_plan
from pytest_llama4.deploy.engines.control_plane import HEALTH_COMPONENTS
from pytest_llama4.deploy.readiness import missing_workers, registered_components


def _health(*components):
    """A /health body as Dynamo 1.4.2 answers it: each worker has a generate and a kv-query endpoint."""
    instances = []
    for component in components:
        instances += [{"component": component, "endpoint": "generate"},
                      {"component": component, "endpoint": "worker_kv_query_source_1"}]
    return {"status": "healthy", "instances": instances}


def test_counts_generate_endpoints_only():
    assert registered_components(_health("backend", "prefill", "prefill")) == {"backend": 1, "prefill": 2}
    assert registered_components({"status": "unhealthy"}) == {}


def test_agg_ready_when_the_backend_registered():
    plan = make_plan("agg")
    assert missing_workers(plan, _health("backend"), HEALTH_COMPONENTS) == []
    assert missing_workers(plan, _health(), HEALTH_COMPONENTS) == [
        ("worker", "worker worker(s): /health lists 0 of 1 planned instance(s) of component 'backend'")]


def test_disagg_names_the_missing_side():
    plan = make_plan("disagg", prefill_workers=2, decode_workers=1)
    assert missing_workers(plan, _health("prefill", "prefill", "backend"), HEALTH_COMPONENTS) == []
    missing = missing_workers(plan, _health("prefill", "backend"), HEALTH_COMPONENTS)
    assert [role for role, _ in missing] == ["prefill"]
    assert "lists 1 of 2" in missing[0][1]
    assert [role for role, _ in missing_workers(plan, _health("prefill", "prefill"), HEALTH_COMPONENTS)] == ["decode"]


class FakeClock:
    """time.monotonic and time.sleep for readiness: sleeping advances the clock, so timing is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_progress_is_reported_every_interval_and_a_check_never_outlasts_one(monkeypatch):
    from pytest_llama4.deploy import phases, readiness
    from pytest_llama4.deploy.phases import Phase
    from pytest_llama4.deploy.readiness import Readiness, wait_until_ready

    clock = FakeClock()
    monkeypatch.setattr(readiness, "time", clock)
    monkeypatch.setattr(phases, "time", clock)
    given: list[float] = []
    reported: list[str] = []

    def check(time_left: float) -> Readiness:
        given.append(time_left)
        clock.sleep(7)  # a probe that waits 7 s for an answer
        return Readiness(False, ("still loading",))

    phase = Phase("worker load + readiness", 100, "--startup-timeout", reported.append, every=30)
    state = wait_until_ready(check, phase, on_poll=lambda: None, interval=1, describe=lambda s: s.missing[0])
    assert not state.ready and state.missing == ("still loading",)
    assert reported == [f"pytest-llama4: worker load + readiness: {t}s of 100s (--startup-timeout), still loading"
                        for t in (31, 63, 95)], "a line once each 30 s have passed (checks of 7 s + 1 s pauses)"
    assert max(given) == 30, "with progress on, one check may not take longer than one interval"
    silent: list[str] = []
    quiet = Phase("worker load + readiness", 100, "--startup-timeout", silent.append, every=0)
    wait_until_ready(check, quiet, on_poll=lambda: None, interval=1, describe=lambda s: "x")
    assert silent == [], "--progress-interval=0: no lines"
    assert quiet.timed_out("the frontend") == ("worker load + readiness did not finish within 100s "
                                               "(--startup-timeout): the frontend")
