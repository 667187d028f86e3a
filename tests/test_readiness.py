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
