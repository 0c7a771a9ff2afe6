"""What a benchmark run covers: cases, targets, timings, and the goals.

A case is (payload size S, depth D, connections C). A plan is the cases,
the servers, and how long each measurement lasts. FULL is the issue's grid
(under 10 minutes), QUICK the reduced one (under a minute) that still
holds every case a goal is set for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from framelab.benchmarks.targets import (
    ALL_TARGETS,
    FRAMED,
    FRAMED_ASYNCIO,
    GRPC,
    MSGPACK,
    MSGPACK_RPC,
    PEER,
    RAW,
    READEXACTLY,
    Target,
)

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, order=True)
class Case:
    size: int  # payload bytes per frame
    depth: int  # frames in flight per connection
    connections: int

    @property
    def label(self) -> str:
        return f"{human_size(self.size)} D={self.depth} C={self.connections}"


def human_size(size: int) -> str:
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} B"


@dataclass(frozen=True)
class Plan:
    name: str
    cases: tuple[Case, ...]
    targets: tuple[Target, ...]
    warmup: float  # seconds, per measurement
    duration: float  # seconds of the measuring window
    rounds: int  # measurements per (case, target), interleaved; the median is kept

    def with_timing(self, warmup: float | None, duration: float | None, rounds: int | None) -> Plan:
        return dataclasses.replace(
            self,
            warmup=self.warmup if warmup is None else warmup,
            duration=self.duration if duration is None else duration,
            rounds=self.rounds if rounds is None else rounds,
        )

    @property
    def measurements(self) -> int:
        return len(self.cases) * len(self.targets) * self.rounds


GRID_CASES = (
    Case(64, 1, 10),
    Case(64, 32, 10),
    Case(1 * KiB, 1, 10),
    Case(1 * KiB, 32, 10),
    Case(64 * KiB, 1, 4),
    Case(1 * MiB, 1, 2),
)
FULL = Plan(
    "full", GRID_CASES, (*ALL_TARGETS, GRPC, MSGPACK_RPC), warmup=0.5, duration=1.5, rounds=3
)
QUICK = Plan(
    "quick",
    (Case(64, 32, 10), Case(1 * KiB, 1, 10), Case(1 * KiB, 32, 10), *GRID_CASES[4:]),
    (RAW, FRAMED, FRAMED_ASYNCIO, PEER, MSGPACK, READEXACTLY, GRPC, MSGPACK_RPC),
    warmup=0.3,
    duration=1.0,
    rounds=1,
)
PLANS = {"full": FULL, "quick": QUICK}


@dataclass(frozen=True)
class Goal:
    """Target `of` must reach `at_least` x the other's rate in `case`."""

    case_key: str
    versus: str  # target name
    at_least: float
    of: str = FRAMED.name


@dataclass(frozen=True)
class LatencyGoal:
    """Target `of`'s p99 at D = 1 must be at most `at_most` x the other's."""

    case_key: str
    of: str
    versus: str
    at_most: float


#: the issues' targets, same run; against gRPC the client differs (its own)
THROUGHPUT_GOALS = (
    Goal("64/32", RAW.name, 0.85),
    Goal("64/32", PEER.name, 2.0),
    Goal("1024/32", RAW.name, 0.80),
    Goal("1024/32", PEER.name, 1.5),
    Goal("65536/1", RAW.name, 0.90),
    Goal("65536/1", PEER.name, 1.5),
    Goal("1048576/1", RAW.name, 0.90),
    Goal("1048576/1", PEER.name, 5.0),
    Goal("64/32", FRAMED.name, 0.35, of=MSGPACK.name),
    Goal("65536/1", FRAMED.name, 0.80, of=MSGPACK.name),
    Goal("1048576/1", FRAMED.name, 0.80, of=MSGPACK.name),
    Goal("64/1", GRPC.name, 3.0, of=MSGPACK.name),
    Goal("1024/1", GRPC.name, 3.0, of=MSGPACK.name),
    Goal("64/32", GRPC.name, 10.0, of=MSGPACK.name),
    Goal("1024/32", GRPC.name, 10.0, of=MSGPACK.name),
    Goal("64/32", READEXACTLY.name, 1.0, of=MSGPACK.name),
    Goal("1024/1", READEXACTLY.name, 1.0, of=MSGPACK.name),
    Goal("1048576/1", READEXACTLY.name, 1.0, of=MSGPACK.name),
)
LATENCY_GOALS = (
    #: p99 latency of the framed echo at 1 KiB, D = 1, against the raw echo's
    LatencyGoal("1024/1", FRAMED.name, RAW.name, 1.3),
    #: "lower p99 than gRPC at depth 1"
    LatencyGoal("64/1", MSGPACK.name, GRPC.name, 1.0),
    LatencyGoal("1024/1", MSGPACK.name, GRPC.name, 1.0),
)
