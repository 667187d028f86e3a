"""The one rule for tests whose dependency may be missing (tests/conftest.py `require`): a skip that says why, and
in CI, which .ci/run sets, a failure."""

import json

import pytest

from .conftest import require


def test_a_missing_dependency_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^sinfo is missing$"):
        require("sinfo is missing", "the SLURM tests")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"^the SLURM tests must run in CI, but sinfo is missing$"):
        require("sinfo is missing", "the SLURM tests")
    require(None, "the SLURM tests")  # present: nothing happens


def test_ci_run_sets_ci_itself():
    from pytest_llama4.config.paths import PROJECT_ROOT

    assert "export CI=${CI:-1}" in (PROJECT_ROOT / ".ci" / "run").read_text()


ALONE_TESTS = '''
    import json, os, time
    import pytest

    def span(name, seconds):
        start = time.monotonic()
        time.sleep(seconds)
        with open(os.environ["SPANS"], "a") as out:
            out.write(json.dumps([name, start, time.monotonic()]) + "\\n")

    @pytest.mark.parametrize("i", range(6))
    def test_shared(i):
        span(f"shared-{i}", 0.3)

    @pytest.mark.alone
    @pytest.mark.parametrize("i", range(2))
    def test_measuring(i):
        span(f"alone-{i}", 0.5)
'''


def test_tests_marked_alone_never_overlap_another_test(pytester, monkeypatch):
    """The run lock of tests/conftest.py, under xdist: an `alone` test shares the machine with no other test."""
    from pathlib import Path

    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    alone: measures time\n")
    pytester.makepyfile(test_spans=ALONE_TESTS)
    spans_file = pytester.path / "spans.jsonl"
    monkeypatch.setenv("SPANS", str(spans_file))
    result = pytester.runpytest_subprocess("-n", "3", "-p", "no:randomly")
    result.assert_outcomes(passed=8)
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    alone = [s for s in spans if s[0].startswith("alone")]
    overlaps = [(a[0], b[0]) for a in alone for b in spans if b is not a and b[1] < a[2] and a[1] < b[2]]
    assert overlaps == [], f"alone tests overlapped: {overlaps}"
    shared = [s for s in spans if s[0].startswith("shared")]
    assert any(a[1] < b[2] and b[1] < a[2] for a in shared for b in shared if a is not b), \
        "the other tests still run side by side (else this check proves nothing)"
