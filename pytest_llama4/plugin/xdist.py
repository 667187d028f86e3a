"""One deployment for every pytest-xdist worker.

The controller hosts it: it starts the deployment when the first worker asks (so `pytest -n 4` on tests that
never touch a deployment starts none), answers every worker with the same description, and stops it after all
workers finished. Workers never start or stop anything. The conversation is two files in the run directory,
which every worker shares: a request, then an answer (the deployment's description, or the startup error).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

REQUEST = ".deployment-request"
ANSWER = ".deployment-answer.json"


class SharedDeploymentHost:
    """Controller side: watch for a worker's request, start the deployment once, publish the answer."""

    def __init__(self, run_dir: Path, start: Callable[[], dict]) -> None:
        self.run_dir = run_dir
        self.start = start
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="pytest-llama4-shared-deployment", daemon=True)

    def open(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            if (self.run_dir / REQUEST).exists():
                self._answer()
                break
            time.sleep(0.05)
        self.stopping.wait()  # the services die with the thread that started them (die_with_parent)

    def _answer(self) -> None:
        try:
            answer = self.start()
        except Exception as error:  # every worker must learn why, instead of waiting for a deployment
            answer = {"error": str(error)}
        staging = self.run_dir / f"{ANSWER}.tmp"
        staging.write_text(json.dumps(answer))
        staging.rename(self.run_dir / ANSWER)

    def close(self) -> None:
        """Stop watching, once the deployment it started has been stopped (its services die with this thread)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()


def ask_controller(run_dir: Path, timeout: float) -> dict:
    """Worker side: request the deployment (idempotent) and wait for the controller's answer."""
    (run_dir / REQUEST).touch()
    deadline = time.monotonic() + timeout
    answer = run_dir / ANSWER
    while not answer.exists():
        if time.monotonic() > deadline:
            return {"error": f"the xdist controller did not answer with a deployment within {timeout:g}s"}
        time.sleep(0.05)
    return json.loads(answer.read_text())
