"""JUnit testsuite properties from every process of a run.

pytest's own `record_testsuite_property` does nothing in a pytest-xdist worker (only the controller writes
junit.xml), so measured figures recorded there were lost. Every process appends its properties to the run
directory instead, and the controller adds them all to the report just before junitxml writes it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _pytest.junitxml import xml_key

DIRNAME = ".properties"


def record(run_dir: Path, name: str, value: object) -> None:
    folder = run_dir / DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{os.getpid()}.jsonl").open("a") as out:
        out.write(json.dumps([name, str(value)]) + "\n")


def merge_into_junit(config: pytest.Config, run_dir: Path) -> None:
    """Add every process's properties, once each, to the junit.xml about to be written."""
    folder = run_dir / DIRNAME
    xml = config.stash.get(xml_key, None)
    if xml is None or not folder.is_dir():
        return
    seen = set()
    for part in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
        for line in part.read_text().splitlines():
            name, value = json.loads(line)
            if (name, value) not in seen:
                seen.add((name, value))
                xml.add_global_property(name, value)
    shutil.rmtree(folder, ignore_errors=True)


class JunitMerger:
    """Registered on the process that writes junit.xml (the xdist controller, or the only process)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    @pytest.hookimpl(tryfirst=True)  # before junitxml's own pytest_sessionfinish writes the file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        merge_into_junit(session.config, self.run_dir)
