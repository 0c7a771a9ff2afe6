"""The list of experiments; modules are imported only when listed or run."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult

#: module names under experiments/, in the order they are run and listed
EXPERIMENT_MODULES = [
    "sticky",
    "nagle",
    "linger",
    "shutdown_close",
    "broken_pipe",
    "reset",
    "process_kill",
    "flush",
    "time_wait",
    "backlog",
    "states",
    "link_mtu",
    "mss",
    "limits",
    "retransmission",
    "icmp",
    "questions",
    "reuseport",
]

#: former names still accepted on the command line -> the experiments they became
ALIASES: dict[str, tuple[str, ...]] = {"mss_mtu": ("link_mtu", "mss")}


def expand(name: str) -> tuple[str, ...]:
    """The registered experiments a name given on the command line stands for."""
    return ALIASES.get(name, (name,))


#: draws one chart on a matplotlib Axes (Any: matplotlib ships no types here)
Drawing = Callable[[Any], None]


@dataclass(frozen=True)
class Chart:
    """A picture an experiment declares for its own results.

    `draw` receives the experiment's results that were not skipped and
    returns how to draw the chart, or None when these results allow none
    (a claim absent, or without the numbers the picture needs).
    """

    filename: str
    draw: Callable[[Sequence[ClaimResult]], Drawing | None]
    size: tuple[float, float] = (9, 4.2)


@dataclass(frozen=True)
class Experiment:
    """One experiment: its name, the claims it checks, and how to run it.

    `needs_root` is "no", "partly" (some claims skip without root) or "yes".
    `run` sets up, acts, observes, decides, and cleans up, even on failure.
    `charts` are the pictures it draws from its results (`--plot DIR`).
    """

    name: str
    claims: tuple[str, ...]
    needs_root: str
    description: str
    run: Callable[[RunContext], list[ClaimResult]]
    charts: tuple[Chart, ...] = ()


def load(name: str) -> Experiment:
    module = importlib.import_module(f"framelab.experiments.{name}")
    experiment: Experiment = module.EXPERIMENT
    return experiment
