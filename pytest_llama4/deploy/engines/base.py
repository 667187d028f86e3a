"""What every engine module produces."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    """A service's command line and the environment it needs on top of the launcher's."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    tasks_per_node: int = 1  # >1: one task per GPU, launched under MPI
    mpi: bool = False  # srun must pass --mpi=pmix (and --oversubscribe, as the seed scripts do)

    def shell(self) -> str:
        """The command as one copy-pasteable shell line (for logs and error messages)."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join([*assignments, *map(shlex.quote, self.argv)])
