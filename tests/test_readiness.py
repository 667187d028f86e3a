
import pytest

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


def test_a_control_plane_that_never_listens_reports_progress_then_fails_naming_the_phase(tmp_path):
    from pytest_llama4.config.settings import Settings
    from pytest_llama4.config.topology import ETCD, Service
    from pytest_llama4.deploy import deployment as deployment_module
    from pytest_llama4.deploy.deployment import Deployment, DeploymentError
    from pytest_llama4.deploy.engines.base import Command
    from pytest_llama4.deploy.launchers.local import LocalLauncher
    from pytest_llama4.deploy.ports import free_port

    lines: list[str] = []
    settings = Settings(control_plane_timeout=1.6, progress_interval=0.5)
    launcher = LocalLauncher(run_label="control-plane-test")
    etcd = Service(ETCD, 0, node=0)
    dep = Deployment(settings, None, "", tmp_path, launcher=launcher, progress=lines.append)
    dep.handles.append(launcher.start(etcd, Command(("sleep", "30")), tmp_path / "etcd-0.log"))  # never listens
    port = free_port()
    try:
        with pytest.raises(DeploymentError, match=rf"^control plane did not finish within 1.6s "
                                                  rf"\(--control-plane-timeout\): etcd-0 is not listening on "
                                                  rf"127.0.0.1:{port}\n--- last lines of etcd-0 log"):
            deployment_module._wait_for_port(dep, etcd, "127.0.0.1", port)
    finally:
        dep.stop()
    assert len(lines) >= 2 and all(line.startswith("pytest-llama4: control plane: ") and
                                   f"of 1.6s (--control-plane-timeout), etcd-0 is not listening on 127.0.0.1:{port} "
                                   "yet" in line for line in lines), lines


def test_an_api_not_answering_blames_the_frontend_or_else_every_service():
    from pytest_llama4.deploy.readiness import Readiness, roles_to_blame

    silent = Readiness(False, ("the API at http://h:1 not answering: ConnectionError",), ("frontend",))
    assert roles_to_blame(silent, ["frontend", "worker"]) == ["frontend"]
    assert roles_to_blame(silent, ["worker"]) == ["worker"], "a standalone server's own log explains it"
