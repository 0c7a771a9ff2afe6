"""The supervisor's decisions, without processes: restart back-off and what
an exit status means. Pure functions of times and statuses, so they are
tested with made-up clocks (the processes live in servers/supervisor.py).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

FIRST_DELAY = 0.1  # seconds before restarting a worker that died
MAX_DELAY = 10.0  # the back-off doubles up to this
HEALTHY_AFTER = 10.0  # a worker that ran this long resets the back-off


@dataclass
class BackOff:
    """Delay before the next restart of one worker slot: doubles with each
    death in a row, back to FIRST_DELAY once a worker stayed up HEALTHY_AFTER
    seconds (a crash loop slows down; a rare crash restarts at once)."""

    first: float = FIRST_DELAY
    limit: float = MAX_DELAY
    healthy_after: float = HEALTHY_AFTER
    deaths_in_a_row: int = 0

    def after_death(self, ran_for: float) -> float:
        if ran_for >= self.healthy_after:
            self.deaths_in_a_row = 0
        delay = min(self.first * 2.0**self.deaths_in_a_row, self.limit)
        self.deaths_in_a_row += 1
        return delay


def describe_status(code: int) -> str:
    """Popen's returncode as words: 'exit status 3', 'killed by SIGKILL'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


def returncode(wait_status: int) -> int:
    """os.waitpid's status as Popen's returncode (negative: the signal)."""
    return os.waitstatus_to_exitcode(wait_status)
