"""Durations as the lab reports them: a stopwatch, medians and gaps in milliseconds."""

from __future__ import annotations

import itertools
import statistics
import time


def median_ms(samples_s: list[float]) -> float:
    """The median of durations given in seconds, in ms rounded to 0.001."""
    return round(statistics.median(samples_s) * 1000, 3)


def gaps_ms(times: list[float]) -> list[float]:
    """ms between successive times (seconds), to 0.1 ms: a back-off made visible."""
    return [round((b - a) * 1000, 1) for a, b in itertools.pairwise(times)]


class Stopwatch:
    """`with Stopwatch() as sw: ...` then sw.seconds / sw.ms."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000, 3)
