"""perf.json through its types: written and read back unchanged, today's and older files read, damaged ones named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llama4.config.settings import Settings
from pytest_llama4.measure import baseline
from pytest_llama4.measure.crosscheck import CrossCheck
from pytest_llama4.measure.load import Scenario
from pytest_llama4.measure.results import LimitResult, PerfDocument, PerfFileError, ScenarioParams, ScenarioResult
from pytest_llama4.plugin.session import Run

# A perf.json as the plugin writes it today (shortened samples; the first scenario ran without frontend metrics).
TODAY = {
    "run_id": "20261201-040711-02c0",
    "settings": {"topology": "agg", "engine": "mocker", "max_regression": "5.0"},
    "deployment": "mocker agg: frontend + 1 worker at http://127.0.0.1:8000, model mock",
    "profile": "cpu-mocker",
    "scenarios": [
        {"name": "chat-isl256-osl64-c8",
         "scenario": {"input_tokens": 256, "output_tokens": 64, "concurrency": 8, "request_rate": None,
                      "num_prompts": 3, "endpoint": "chat"},
         "figures": {"completed": 3.0, "failed": 0.0, "output_throughput": 812.5, "ttft_ms_p99": 41.2},
         "limits": [{"metric": "output_throughput", "kind": "floor", "limit": 600, "measured": 812.5, "ok": True},
                    {"metric": "goodput", "kind": "floor", "limit": 1.0, "measured": None, "ok": False}],
         "samples": {"request_start_s": [0.0, 0.01, 0.02], "ttft_ms": [30.1, 35.0, 41.2], "itl_ms": []},
         "warnings": ["no Prometheus /metrics on the frontend: client figures not cross-checked"],
         "cross_check": None, "valid": True},
        {"name": "completions-isl512-osl32-rate20",
         "scenario": {"input_tokens": 512, "output_tokens": 32, "concurrency": None, "request_rate": 20.0,
                      "num_prompts": 2, "endpoint": "completions"},
         "figures": {"completed": 2.0, "failed": 0.0, "output_throughput": 301.0},
         "limits": [],
         "samples": {"ttft_ms": [12.5, 13.0]},
         "warnings": [],
         "cross_check": {"server_requests": 3.0, "client_requests": 3, "server_ttft_ms_mean": 11.9,
                         "client_ttft_ms_mean": 12.75, "problems": []},
         "valid": False},
    ],
}

# What perf.json held before the cross-check figures and the validity gate were added.
FIRST_RELEASE_SCENARIO = {
    "name": "c1", "scenario": TODAY["scenarios"][0]["scenario"], "figures": {"output_throughput": 100.0},
    "limits": [], "samples": {}, "warnings": []}


def result(name: str = "c8") -> ScenarioResult:
    return ScenarioResult(
        name=name,
        scenario=ScenarioParams.of(Scenario(name, input_tokens=16, output_tokens=8, num_prompts=4, concurrency=2)),
        figures={"output_throughput": 100.5, "completed": 4.0},
        limits=(LimitResult(metric="output_throughput", kind="floor", limit=50, measured=100.5, ok=True),),
        samples={"ttft_ms": [1.5, 2.0]}, warnings=("the frontend counted 3 first tokens, the client 5 requests",),
        cross_check=CrossCheck(3.0, 5, 2.25, 1.75, ("the frontend counted 3 first tokens, the client 5 requests",)),
        valid=True)


def test_a_document_reads_back_as_written(tmp_path: Path) -> None:
    perf = PerfDocument(run_id="r", settings={"topology": "agg"}, deployment="d", profile="p",
                        scenarios=(result("a"), result("b")))
    assert PerfDocument.read(perf.write(tmp_path / "perf.json")) == perf
    assert perf.scenarios[0].scenario == ScenarioParams(16, 8, 2, None, 4, "chat")


def test_todays_perf_json_is_read_and_written_back_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    path.write_text(json.dumps(TODAY, indent=1))
    perf = PerfDocument.read(path)
    first, second = perf.scenarios
    assert (perf.run_id, perf.profile, first.name, second.scenario.request_rate) == (
        "20261201-040711-02c0", "cpu-mocker", "chat-isl256-osl64-c8", 20.0)
    assert first.limits[1] == LimitResult("goodput", "floor", 1.0, None, False)
    assert first.cross_check is None and second.cross_check == CrossCheck(3.0, 3, 11.9, 12.75, ())
    assert (first.valid, second.valid) == (True, False)
    rewritten = perf.write(tmp_path / "again.json")
    assert rewritten.read_text() == path.read_text()


def test_files_of_earlier_releases_and_hand_made_baselines_are_read(tmp_path: Path) -> None:
    old = PerfDocument.from_dict({**TODAY, "scenarios": [FIRST_RELEASE_SCENARIO]}).scenarios[0]
    assert (old.cross_check, old.valid, old.figures) == (None, None, {"output_throughput": 100.0})
    minimal = PerfDocument.from_dict({"scenarios": [{"name": "a", "figures": {"x": 1}}]})
    assert minimal == PerfDocument(scenarios=(ScenarioResult(name="a", figures={"x": 1}),))


@pytest.mark.parametrize(("text", "problem"), [
    ("", "Expecting value"),
    ("\xff", "can't decode byte 0xff"),
    ("[1, 2]", "top level: expected an object, found list"),
    ('{"run_id": "r"}', "top level: no 'scenarios'"),
    ('{"scenarios": {"a": 1}}', "scenarios: unexpected dict"),
    ('{"scenarios": [{"name": "a"}]}', "scenarios[0]: no 'figures'"),
    ('{"scenarios": [{"name": "a", "figures": {"x": "fast"}}]}', "scenarios[0].figures: holds something that is not"),
    ('{"scenarios": [{"name": "a", "figures": {}, "samples": {"ttft_ms": 3}}]}', "scenarios[0].samples.ttft_ms: unex"),
    ('{"scenarios": [{"name": "a", "figures": {}, "limits": [{"metric": "x"}]}]}', "scenarios[0].limits[0]: no 'kind'"),
    ('{"scenarios": [{"name": "a", "figures": {}, "cross_check": {}}]}', "scenarios[0].cross_check: no 'server_req"),
])
def test_a_damaged_file_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "perf.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(PerfFileError) as error:
        PerfDocument.read(path)
    assert problem in str(error.value)
    with pytest.raises(pytest.UsageError) as usage:
        baseline.load(path)
    assert str(usage.value).startswith(f"--baseline={path}: not a readable perf.json (") and problem in str(usage.value)


def test_a_missing_file_is_a_perf_file_error(tmp_path: Path) -> None:
    with pytest.raises(PerfFileError, match="No such file"):
        PerfDocument.read(tmp_path / "nothing.json")


def test_the_run_writes_every_recorded_scenario_in_order(tmp_path: Path) -> None:
    run = Run(Settings(reports_dir=tmp_path), "run-1")
    assert run.write_perf() is None, "no scenario, no perf.json"
    for name in ("first", "second"):
        run.record_perf(result(name))
    perf = run.write_perf()
    assert [s.name for s in perf.scenarios] == ["first", "second"] and perf.run_id == "run-1"
    assert PerfDocument.read(tmp_path / "run-1" / "perf.json") == perf
    assert not (tmp_path / "run-1" / ".perf").exists()


def test_the_acceptance_measurement_round_trips_and_is_absent_when_not_measured():
    from pytest_llama4.measure.results import AcceptanceResult, PerfDocument

    measured = AcceptanceResult(3.7, drafted=550, accepted=508, steps=188, max_draft_len=3, floor=1.5)
    document = PerfDocument(run_id="r", scenarios=(), speculative=measured)
    assert PerfDocument.from_dict(json.loads(json.dumps(document.to_dict()))).speculative == measured
    assert "speculative" not in PerfDocument(run_id="r", scenarios=()).to_dict()
