"""Nothing a run started survives it, whatever ends the run: signals during startup or a test, a fixture that
raises, an xdist worker that crashes, pytest itself SIGKILLed, a service that ignores SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llama4.config.topology import Service
from pytest_llama4.deploy.engines.base import Command
from pytest_llama4.deploy.launchers.local import LocalLauncher

from .test_integration import as_at_a_terminal, assert_nothing_left, listening, processes_of_run, run_ids, run_pytest

pytestmark = pytest.mark.integration


def start_pytest(cwd: Path, reports: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", f"--reports-dir={reports}", "-p", "no:cacheprovider",
                             *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=as_at_a_terminal)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"pytest ended before {what}: {proc.stdout.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_until_nothing_left(reports: Path, timeout: float = 15, killed: bool = False) -> None:
    """The kernel delivers a parent-death signal asynchronously: give it a moment, then demand a clean table."""
    deadline = time.monotonic() + timeout
    while any(processes_of_run(r) for r in run_ids(reports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_nothing_left(reports, killed=killed)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_during_startup(pytester, tmp_path, sig):
    pytester.makepyfile("def test_up(deployment): pass")
    reports = tmp_path / "reports"
    proc = start_pytest(pytester.path, reports, "--startup-timeout=60")
    try:
        # the frontend's log appears when it is launched, well before the deployment is ready
        wait_for(lambda: any(reports.glob("*/logs/frontend-0.log")), proc, "the frontend was launched")
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-2000:]
    assert_nothing_left(reports)


def test_pytest_sigkilled_mid_test_leaves_no_service(pytester, tmp_path):
    up = tmp_path / "up"
    pytester.makepyfile(f"""
        import pathlib, time

        def test_long(deployment):
            pathlib.Path({str(up)!r}).write_text("up")
            time.sleep(120)
        """)
    reports = tmp_path / "reports"
    proc = start_pytest(pytester.path, reports)
    try:
        wait_for(up.exists, proc, "the deployment was up")
        (run_id,) = run_ids(reports)
        assert len(processes_of_run(run_id)) >= 2
        proc.kill()  # SIGKILL: no teardown code of pytest runs
        proc.wait(timeout=30)
    finally:
        proc.kill()
    wait_until_nothing_left(reports, killed=True)


def test_a_fixture_that_raises_still_tears_down(pytester, tmp_path):
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def broken(deployment):
            raise RuntimeError("fixture bug")

        def test_uses_broken(broken):
            pass

        def test_after(deployment):
            assert deployment.base_url
        """)
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports)
    result.assert_outcomes(passed=1, errors=1)
    assert_nothing_left(reports)


def test_a_crashing_xdist_worker_leaves_nothing(pytester, tmp_path):
    pytester.makepyfile("""
        import os

        def test_crash(deployment):
            os._exit(3)

        def test_fine(deployment):
            assert deployment.base_url
        """)
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, "-n", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*worker*crashed while running*test_crash*"])  # xdist names the crash and the test
    failed = [line for line in result.stdout.lines if line.startswith("FAILED")]
    assert failed and not any("test_fine" in line for line in failed), "only the crashed test fails"
    wait_until_nothing_left(reports)


def test_a_service_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
             "time.sleep(300)"
    launcher = LocalLauncher(run_label=f"stubborn-{os.getpid()}")
    handle = launcher.start(Service("worker", 0, 0), Command((sys.executable, "-c", ignore)), tmp_path / "w.log")
    deadline = time.monotonic() + 60
    while "up" not in (tmp_path / "w.log").read_text().splitlines():  # SIGTERM must find its handler installed
        assert handle.returncode() is None and time.monotonic() < deadline, "the service never said it was up"
        time.sleep(0.05)
    started = time.monotonic()
    handle.stop(grace=1.0)
    waited = time.monotonic() - started
    assert handle.returncode() == -signal.SIGKILL, "it should have taken SIGKILL"
    assert 1.0 <= waited < 5, f"stopped after {waited:.1f}s, expected the 1 s grace period then SIGKILL"
    assert processes_of_run(launcher.run_label) == []


STRAGGLER = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
             "print(s.getsockname()[1], flush=True); time.sleep(120)")


def test_the_leak_check_sees_what_the_run_label_cannot(tmp_path):
    """assert_nothing_left fails on leaks a label scan misses: a process without the run label left in a service's
    process group and holding its port, and a /dev/shm entry made during the run that nobody holds."""
    run_dir = tmp_path / "reports" / "20261201-000000-leak"
    run_dir.mkdir(parents=True)
    straggler = subprocess.Popen([sys.executable, "-c", STRAGGLER], start_new_session=True, stdout=subprocess.PIPE,
                                 text=True)
    try:
        port = int(straggler.stdout.readline())
        (run_dir / "services.json").write_text(json.dumps([
            {"name": "worker-0", "argv": ["worker", "--port", str(port)], "system_port": None, "pid": straggler.pid}]))
        with pytest.raises(AssertionError, match="processes left in its service groups"):
            assert_nothing_left(tmp_path / "reports")
        assert listening({port}, [straggler.pid]) == [f"port {port}: pid {straggler.pid}"]
    finally:
        straggler.kill()
        straggler.wait()
    assert_nothing_left(tmp_path / "reports")
    shm = Path("/dev/shm") / f"llama4-test-{os.getpid()}"
    shm.write_bytes(b"left")
    try:
        with pytest.raises(AssertionError, match=f"(?s)left /dev/shm entries.*{shm.name}"):
            assert_nothing_left(tmp_path / "reports")
    finally:
        shm.unlink()
    assert_nothing_left(tmp_path / "reports")


class EntryWithoutLine:
    """A traceback entry as Python 3.11 can leave one after an interrupt: no line number."""

    @property
    def lineno(self) -> int:
        raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")


def test_ctrl_c_reports_leave_out_traceback_entries_without_a_line_number():
    """Seen in one of five CI runs: Ctrl-C during startup ended in pytest's internal error (status 1), because
    pytest could not print such an entry. The plugin drops them before pytest reports the interrupt."""
    from pytest_llama4.plugin import hooks

    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        excinfo = pytest.ExceptionInfo.from_current()
    real = list(excinfo.traceback)
    excinfo.traceback = type(excinfo.traceback)([*real, EntryWithoutLine()])
    hooks.pytest_keyboard_interrupt(excinfo)
    assert list(excinfo.traceback) == real
    assert "KeyboardInterrupt" in str(excinfo.getrepr(funcargs=True))
