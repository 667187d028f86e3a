from pathlib import Path

import pytest

from pytest_llama4.config.topology import DECODE, FRONTEND, PREFILL, WORKER, make_plan


def test_agg_is_frontend_plus_one_worker_on_one_node():
    plan = make_plan("agg", engine_config=Path("agg.yaml"))
    assert [(s.role, s.index, s.node) for s in plan.services] == [(FRONTEND, 0, 0), (WORKER, 0, 0)]
    assert plan.workers[0].engine_config == Path("agg.yaml")
    assert plan.frontend.engine_config is None
    assert plan.num_nodes == 1
    assert plan.describe() == "agg: frontend + 1 worker on 1 node"


def test_agg_ignores_disagg_worker_counts():
    assert make_plan("agg", prefill_workers=3, decode_workers=4) == make_plan("agg")


@pytest.mark.parametrize("prefill", [1, 2, 3])
@pytest.mark.parametrize("decode", [1, 2, 4])
def test_disagg_plans_frontend_once_and_every_worker(prefill, decode):
    plan = make_plan("disagg", prefill_workers=prefill, decode_workers=decode,
                     prefill_engine_config=Path("p.yaml"), decode_engine_config=Path("d.yaml"))
    assert plan.count(FRONTEND) == 1
    assert plan.services[0].role == FRONTEND, "the frontend starts first"
    assert plan.count(PREFILL) == prefill and plan.count(DECODE) == decode and plan.count(WORKER) == 0
    assert [s.index for s in plan.services if s.role == PREFILL] == list(range(prefill))
    assert [s.index for s in plan.services if s.role == DECODE] == list(range(decode))
    assert {s.engine_config for s in plan.services if s.role == PREFILL} == {Path("p.yaml")}
    assert {s.engine_config for s in plan.services if s.role == DECODE} == {Path("d.yaml")}
    worker_nodes = [s.node for s in plan.workers]
    assert worker_nodes == list(range(prefill + decode)), "one node per worker, prefill first"
    assert plan.frontend.node == 0 and plan.num_nodes == prefill + decode
    assert len({s.name for s in plan.services}) == len(plan.services), "service names are unique (log files)"
    assert plan.describe() == f"disagg: frontend + {prefill} prefill + {decode} decode on {prefill + decode} nodes"


@pytest.mark.parametrize(("prefill", "decode"), [(0, 1), (1, 0), (-1, 1)])
def test_disagg_needs_both_sides(prefill, decode):
    with pytest.raises(ValueError, match="at least one prefill and one decode"):
        make_plan("disagg", prefill_workers=prefill, decode_workers=decode)


def test_unknown_topology_is_rejected():
    with pytest.raises(ValueError, match="unknown topology 'mesh'"):
        make_plan("mesh")


def test_workers_span_the_seed_guides_node_counts():
    agg = make_plan("agg", worker_nodes=2)
    assert agg.workers[0].nodes == (0, 1) and agg.num_nodes == 2
    plan = make_plan("disagg", prefill_workers=2, prefill_nodes=2, decode_workers=1, decode_nodes=3)
    assert [(s.name, s.nodes) for s in plan.workers] == [
        ("prefill-0", (0, 1)), ("prefill-1", (2, 3)), ("decode-0", (4, 5, 6))]
    assert plan.num_nodes == 7
    with pytest.raises(ValueError, match="at least one node"):
        make_plan("agg", worker_nodes=0)


@pytest.mark.parametrize("topology", ["agg", "disagg"])
def test_etcd_discovery_plans_the_control_plane_once_on_the_head_node(topology):
    plan = make_plan(topology, discovery="etcd")
    assert [s.role for s in plan.services[:3]] == ["etcd", "nats", FRONTEND], "control plane before the frontend"
    assert plan.count("etcd") == plan.count("nats") == plan.count(FRONTEND) == 1
    assert {s.node for s in plan.services if not s.is_worker} == {0}
    assert plan.describe().endswith("(etcd + nats discovery)")
    assert make_plan(topology).count("etcd") == 0, "file discovery needs no control plane"
    with pytest.raises(ValueError, match="unknown discovery"):
        make_plan(topology, discovery="consul")
