import pytest


def test_waiver_turns_a_known_deviation_into_a_strict_xfail(pytester):
    pytester.makefile(".yaml", waivers="""
        - test: "test_dev.py::test_known[*]"
          engines: [mocker]
          reason: engine answers 500
        - test: "test_dev.py::test_other_engine"
          engines: [trtllm-serve]
          reason: not this engine
        """)
    pytester.makepyfile(test_dev="""
        import pytest

        @pytest.mark.parametrize("case", ["a", "b"])
        def test_known(case):
            assert case == "b"

        def test_other_engine():
            assert False
        """)
    result = pytester.runpytest("--waivers=waivers.yaml", "-rxXf")
    result.assert_outcomes(xfailed=1, failed=2)  # [b] passes unexpectedly: strict, so it fails
    result.stdout.fnmatch_lines(["*XPASS(strict)*known deviation: engine answers 500*"])
    assert "test_other_engine" in result.stdout.str()


def test_bad_waiver_file_is_a_usage_error(pytester):
    pytester.makefile(".yaml", waivers="- test: x\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--waivers=waivers.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*each entry needs test, engines and reason*"])
