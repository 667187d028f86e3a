"""Ctrl-C and SIGTERM end the run through pytest's KeyboardInterrupt path, which stops the deployment.

A KeyboardInterrupt raised by a signal handler can land inside code that swallows it (a fork's at-fork
callbacks while a service is being launched do), so the signal is also remembered and raised again at the next
safe point: each readiness poll and each test phase. The handler is process-wide, as signals are.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_received: list[int] = []
_deferring = 0  # > 0 inside a section a KeyboardInterrupt must not cut in two


def _interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    if not _deferring:
        raise KeyboardInterrupt(f"received signal {signum}")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal's KeyboardInterrupt until the section ends: between a process being forked and its handle
    being recorded for teardown, an interrupt would leave the process (and its children) to nobody."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    raise_if_received()


def install() -> None:
    """Take over SIGTERM (a CI timeout, `scancel`, `kill`) and SIGINT where nobody else has."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _interrupt)


def raise_if_received() -> None:
    """Re-raise a signal whose KeyboardInterrupt was swallowed where it first landed."""
    if _received:
        raise KeyboardInterrupt(f"received signal {_received[-1]}")
