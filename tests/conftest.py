import os

import pytest

pytest_plugins = ["pytester"]


def require(reason: str | None, what: str) -> None:
    """The one rule for a test whose dependency (SLURM, Chromium, a venv, ai-dynamo) may be missing: skip saying
    why; in CI (.ci/run sets CI) a missing dependency is a failure, never a silent skip."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} must run in CI, but {reason}")
    pytest.skip(reason)
