"""A startup phase: its budget, the option that sets it, and its progress lines.

Every phase of a start (image import + preflight, control plane, worker load + readiness) has a budget of its own,
and a person watching a 20-minute model load sees a line every --progress-interval seconds naming the phase, the
time spent of its budget, and what it still waits for; a timeout names the phase and its option.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

PREFIX = "pytest-llama4: "


@dataclass
class Phase:
    name: str  # what a person calls it: "worker load + readiness"
    budget: float  # seconds
    option: str  # the option that sets the budget, for every message about it
    report: Callable[[str], None] | None = None  # where progress lines go; None: nowhere
    every: float = 0.0  # seconds between progress lines; 0: none
    started: float = field(default_factory=lambda: time.monotonic())
    _next_line: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_line = self.started + self.every

    @property
    def reports(self) -> bool:
        return self.report is not None and self.every > 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.started + self.budget - time.monotonic()

    def over(self) -> bool:
        return self.left() <= 0

    def tick(self, detail: Callable[[], str]) -> None:
        """Report `detail()` (computed only then) once each progress interval has passed."""
        now = time.monotonic()
        if self.report is None or self.every <= 0 or now < self._next_line:
            return
        self.report(self.status(detail(), now - self.started))
        self._next_line += self.every * (1 + (now - self._next_line) // self.every)

    def status(self, detail: str, waited: float) -> str:
        return f"{PREFIX}{self.name}: {waited:.0f}s of {self.budget:g}s ({self.option}), {detail}"

    def timed_out(self, what: str) -> str:
        """The first line of a timeout's message: the phase, its budget and how to change it, what was missing."""
        return f"{self.name} did not finish within {self.budget:g}s ({self.option}): {what}"
