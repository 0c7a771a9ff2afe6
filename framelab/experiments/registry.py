"""The list of experiments; modules are imported only when listed or run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

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
    "mss_mtu",
    "limits",
    "retransmission",
    "icmp",
]


@dataclass(frozen=True)
class Experiment:
    """One experiment: its name, the claims it checks, and how to run it.

    `needs_root` is "no", "partly" (some claims skip without root) or "yes".
    `run` sets up, acts, observes, decides, and cleans up, even on failure.
    """

    name: str
    claims: tuple[str, ...]
    needs_root: str
    description: str
    run: Callable[[RunContext], list[ClaimResult]]


def load(name: str) -> Experiment:
    module = importlib.import_module(f"framelab.experiments.{name}")
    experiment: Experiment = module.EXPERIMENT
    return experiment
