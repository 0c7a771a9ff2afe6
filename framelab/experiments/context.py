"""Run-wide settings an experiment receives: rounds, root, capture."""

from __future__ import annotations

import os
from dataclasses import dataclass


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class RunContext:
    """`rounds`: repetitions for timings (median); `quick`: the demo's short pass."""

    rounds: int = 5
    quick: bool = False
    root: bool = running_as_root()

    @property
    def can_capture(self) -> bool:
        return self.root

    @property
    def quiet(self) -> float:
        """Seconds to watch for something that should not come (a segment, an error)."""
        return 0.2 if self.quick else 0.5
