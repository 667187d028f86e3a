"""pytest-xdist: one deployment for every worker, started and stopped by the controller; measuring and
disruptive tests run alone; verdicts equal a serial run's."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from .test_integration import SUITES, assert_nothing_left, check_junit, properties, run_ids, run_pytest

pytestmark = pytest.mark.integration


def verdicts(junit) -> dict[str, str]:
    """nodeid-ish -> passed / failed / skipped (xfails count as skipped in JUnit)."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        result[f"{case.get('classname')}::{case.get('name')}"] = kinds.pop() if kinds else "passed"
    return result


def test_one_deployment_for_all_workers_with_serial_verdicts(pytester, tmp_path):
    serial = run_pytest(pytester, tmp_path / "serial", str(SUITES), "-m", "not throughput")
    parallel = run_pytest(pytester, tmp_path / "parallel", str(SUITES), "-m", "not throughput", "-n", "3",
                          "--dist", "loadgroup")
    assert serial.ret == 0 and parallel.ret == 0, parallel.stdout.str()[-3000:]
    (run_id,) = run_ids(tmp_path / "parallel")
    run_dir = tmp_path / "parallel" / run_id
    logs = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert logs == ["frontend-0.log", "worker-0.log"], f"more than one deployment was started: {logs}"
    for log in logs:
        headers = [line for line in (run_dir / "logs" / log).read_text().splitlines() if line.startswith("# 20")]
        assert len(headers) == 1, f"{log} was started {len(headers)} times"
    (serial_id,) = run_ids(tmp_path / "serial")
    assert verdicts(run_dir / "junit.xml") == verdicts(tmp_path / "serial" / serial_id / "junit.xml")
    assert_nothing_left(tmp_path / "parallel")


def test_an_exclusive_test_never_overlaps_another(pytester, tmp_path):
    trace = tmp_path / "trace.jsonl"
    pytester.makepyfile(f"""
        import json, os, time
        import pytest

        def record(kind, start):
            with open({str(trace)!r}, "a") as f:
                f.write(json.dumps({{"kind": kind, "start": start, "end": time.time(), "pid": os.getpid()}}) + "\\n")

        @pytest.mark.parametrize("i", range(8))
        def test_shared(i):
            start = time.time()
            time.sleep(0.3)
            record("shared", start)

        @pytest.mark.exclusive
        @pytest.mark.parametrize("i", range(2))
        def test_alone(i):
            start = time.time()
            time.sleep(0.5)
            record("exclusive", start)
        """)
    result = run_pytest(pytester, tmp_path / "reports", "-n", "3")
    result.assert_outcomes(passed=10)
    spans = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len({s["pid"] for s in spans}) > 1, "the tests should have run on several workers"
    shared = [s for s in spans if s["kind"] == "shared"]
    overlapping = [(a, b) for a in spans if a["kind"] == "exclusive" for b in spans
                   if b is not a and b["start"] < a["end"] and a["start"] < b["end"]]
    assert overlapping == [], f"exclusive tests overlapped: {overlapping}"
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in shared for b in shared if a is not b), \
        "shared tests should run concurrently (else the check above proves nothing)"


@pytest.mark.alone
def test_throughput_under_four_workers_matches_a_serial_run(pytester, tmp_path):
    """Measuring tests hold the run lock exclusively, so sharing the deployment with 4 workers costs nothing."""
    figures = {}
    for name, extra in (("serial", ()), ("parallel", ("-n", "4"))):
        reports = tmp_path / name
        result = run_pytest(pytester, reports, str(SUITES), "-m", "throughput or schema", *extra)
        assert result.ret == 0, result.stdout.str()[-3000:]
        (run_id,) = run_ids(reports)
        perf = json.loads((reports / run_id / "perf.json").read_text())
        figures[name] = {s["name"]: s["figures"]["output_throughput"] for s in perf["scenarios"]}
    for scenario, serial in figures["serial"].items():
        ratio = figures["parallel"][scenario] / serial
        assert 0.7 < ratio < 1.3, f"{scenario}: {figures['parallel'][scenario]:.0f} tok/s under -n 4 against " \
                                  f"{serial:.0f} serial (ratio {ratio:.2f})"


def test_properties_recorded_in_workers_reach_junit(pytester, tmp_path):
    """pytest's record_testsuite_property is a no-op in xdist workers; the plugin's reaches the controller's file."""
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, str(SUITES / "test_config.py"), "-n", "2", "--topology=disagg")
    assert result.ret == 0, result.stdout.str()[-3000:]
    (run_id,) = run_ids(reports)
    props = properties(check_junit(reports / run_id / "junit.xml"))
    assert props["run_id"] == run_id and props["topology"] == "disagg"
    assert props["engine_config_keys"], "recorded by the config suite, inside a worker"
    assert not (reports / run_id / ".properties").exists(), "the per-process property files are merged, then removed"
