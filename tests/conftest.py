import fcntl
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


@pytest.fixture(autouse=True)
def _machine_share(request, tmp_path_factory):
    """Tests marked `alone` measure time or speed: they run with no other test of this session on the machine
    (under xdist too), instead of with loosened bounds. Every other test holds the run lock shared; an `alone`
    test first closes the gate, so no new test starts, then waits for the running ones and takes it exclusively."""
    shared_dir = tmp_path_factory.getbasetemp().parent  # one for all xdist workers of this session
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared_dir / "llama4-tests.gate", "a") as gate, open(shared_dir / "llama4-tests.run", "a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
