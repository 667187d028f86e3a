"""Known deviations of real engines from the OpenAI API, applied as strict xfails.

A waiver never loosens a check: the test still runs, and `strict=True` turns it red the day the engine is fixed,
so the waiver gets removed instead of going stale. It covers a failed check (AssertionError) only: a crash, a
timeout or a dead server in a waived test is still a failure. A waiver names the engines and the Dynamo releases it
was seen on; it is matched by name at collection, and by engine and release when the test sets up, once the
deployment (and the release preflight found there) is known.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

CANDIDATES = pytest.StashKey[list["Waiver"]]()


class UnknownRelease(pytest.PytestWarning):
    """Waivers could not be matched: the deployment's Dynamo release is not known."""


@dataclass(frozen=True)
class Waiver:
    test: str  # "<file name>::<test name>", where only "*" is a wildcard (brackets are literal: test ids)
    engines: tuple[str, ...]
    releases: SpecifierSet  # the Dynamo releases it was seen on, e.g. ">=1.4.2,<=1.6.1"
    reason: str

    def names(self, item: pytest.Item) -> bool:
        pattern = ".*".join(map(re.escape, self.test.split("*")))
        return re.fullmatch(pattern, f"{item.path.name}::{item.name}") is not None

    def names_engine(self, name: str) -> bool:
        return name in self.engines

    def covers(self, release: str) -> bool:
        """'1.6' (a release given without its patch level) is read as 1.6.0."""
        try:
            return Version(release) in self.releases
        except InvalidVersion:
            return False


def load(path: Path) -> list[Waiver]:
    try:
        entries = yaml.safe_load(path.read_text()) or []
        return [Waiver(e["test"], tuple(e["engines"]), SpecifierSet(e["releases"]), e["reason"].strip())
                for e in entries]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, InvalidSpecifier) as error:
        raise pytest.UsageError(f"waiver file {path} is unreadable ({type(error).__name__}: {error}); each entry "
                                "needs test, engines, releases (Dynamo releases as a version range, e.g. "
                                "\">=1.4.2,<=1.6.1\") and reason (see suites/waivers.yaml), or pass --waivers=none"
                                ) from None


def mark_candidates(items: list[pytest.Item], waivers: list[Waiver]) -> None:
    """At collection: remember on each test the waivers naming it (the engine and release are known later)."""
    for item in items:
        named = [w for w in waivers if w.names(item)]
        if named:
            item.stash[CANDIDATES] = named


def apply(request: pytest.FixtureRequest, engine: str, release: str | None, runs_dynamo: bool) -> None:
    """At setup, with the deployment known: the waivers of this test naming its engine and, for an engine behind
    Dynamo, covering its release become strict xfails (pytest evaluates xfail marks again when the test is called).
    `release` None: a Dynamo release nobody told us; no waiver applies, and a warning says how to name it."""
    named = [w for w in candidates(request.node) if w.names_engine(engine)]
    if named and runs_dynamo and release is None:
        warnings.warn(UnknownRelease(
            "known deviations are not waived: the Dynamo release behind --endpoint is unknown (its API does not "
            "say); pass --dynamo-version=X.Y.Z to apply suites/waivers.yaml's entries for it"), stacklevel=1)
        return
    for waiver in named:
        if not runs_dynamo or waiver.covers(release or ""):
            where = f" on Dynamo {release}" if runs_dynamo else ""
            request.applymarker(pytest.mark.xfail(reason=f"known deviation of {engine}{where}: {waiver.reason}",
                                                  strict=True, raises=AssertionError))


def candidates(item: pytest.Item) -> list[Waiver]:
    """The waivers naming this test and the run's engine (empty for most tests)."""
    return item.stash.get(CANDIDATES, [])
