"""The one rule for tests whose dependency may be missing (tests/conftest.py `require`): a skip that says why, and
in CI, which .ci/run sets, a failure."""

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
