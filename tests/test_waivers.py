import pytest

WAIVERS = """
    - test: "test_dev.py::test_known[*]"
      engines: [mocker]
      releases: ">=1.4.2,<=1.6.1"
      reason: engine answers 500
    - test: "test_dev.py::test_old_release_only"
      engines: [mocker]
      releases: "==1.4.*"
      reason: fixed in 1.6
    - test: "test_dev.py::test_known_crash"
      engines: [mocker]
      releases: ">=1.4.2,<=1.6.1"
      reason: engine answers 500
    - test: "test_dev.py::test_other_engine"
      engines: [trtllm-serve]
      releases: ">=0"
      reason: not this engine
    """


def test_waiver_turns_a_known_deviation_into_a_strict_xfail_on_the_releases_it_names(pytester):
    pytester.makefile(".yaml", waivers=WAIVERS)
    pytester.makepyfile(test_dev="""
        import pytest

        @pytest.mark.parametrize("case", ["a", "b"])
        def test_known(case):
            assert case == "b"

        def test_old_release_only():
            assert False

        def test_known_crash():
            raise ConnectionError("the server died")

        def test_other_engine():
            assert False
        """)
    on_1_4 = pytester.runpytest("--waivers=waivers.yaml", "--dynamo-version=1.4.2", "-rxXf")
    on_1_4.assert_outcomes(xfailed=2, failed=3)  # [b] passes unexpectedly: strict, so it fails
    assert "FAILED test_dev.py::test_known_crash - ConnectionError" in on_1_4.stdout.str(), "a crash is no deviation"
    on_1_4.stdout.fnmatch_lines(["*XPASS(strict)*known deviation of mocker on Dynamo 1.4.2: engine answers 500*"])
    assert "FAILED test_dev.py::test_other_engine" in on_1_4.stdout.str()
    on_1_6 = pytester.runpytest("--waivers=waivers.yaml", "--dynamo-version=1.6.1", "-rxXf")
    on_1_6.assert_outcomes(xfailed=1, failed=4)
    assert "FAILED test_dev.py::test_old_release_only" in on_1_6.stdout.str(), "a waiver ends with its releases"


def test_an_endpoint_of_unknown_release_gets_no_waiver_and_says_how_to_name_it(pytester):
    pytester.makefile(".yaml", waivers=WAIVERS)
    pytester.makepyfile(test_dev="def test_old_release_only():\n    assert False\n")
    result = pytester.runpytest("--waivers=waivers.yaml", "--endpoint=http://127.0.0.1:9", "--engine=mocker", "-W",
                                "error::pytest_llama4.plugin.waivers.UnknownRelease")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the Dynamo release behind --endpoint is unknown*pass --dynamo-version=X.Y.Z*"])
    named = pytester.runpytest("--waivers=waivers.yaml", "--endpoint=http://127.0.0.1:9", "--engine=mocker",
                               "--dynamo-version=1.4.2")
    named.assert_outcomes(xfailed=1)
    unnamed = pytester.runpytest("--waivers=waivers.yaml", "--endpoint=http://127.0.0.1:9", "--dynamo-version=1.4.2")
    unnamed.assert_outcomes(failed=1)  # --endpoint without --engine: an unknown engine, whose deviations none waives


@pytest.mark.parametrize("entry, wrong", [
    ("- test: x\n", "KeyError"),
    ("- {test: x, engines: [mocker], releases: 'one point four', reason: r}\n", "InvalidSpecifier"),
])
def test_bad_waiver_file_is_a_usage_error(pytester, entry, wrong):
    pytester.makefile(".yaml", waivers=entry)
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--waivers=waivers.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*({wrong}*each entry needs test, engines, releases*"])
