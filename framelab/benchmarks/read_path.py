"""Where one read's CPU goes in the framed echo, stage by stage, in process.

The server benchmark says how fast the framed echo is; this says what each
layer of its per-read path costs, without sockets or a second process, so
the numbers are the code's and not the machine's. One "read" is what the
event loop hands the protocol: DEPTH whole frames of SIZE bytes, written into
the memory get_buffer() offered. The stages:

- split: the compiled (or pure) split loop alone, on a filled buffer;
- one call: the least any Python adapter could do: one function per read
  that splits, runs the handler and packs the replies into one write;
- decoder: FrameDecoder.get_buffer() + buffer_updated() (no handler, no send);
- protocol: FramedProtocol with its ConnectionPolicy, as the server runs it.

protocol minus one call is what the layering costs per read (the decoder's
and the policy's checks, the calls between them); one call minus split is
the handler, the packing and the write that any echo pays.

The transport is a stub whose methods are C callables (as uvloop's are), so
the stub itself adds no Python; each stage's first write is checked to be the
input echoed byte for byte. Time per read is measured with perf_counter;
with --instructions each stage also runs under `valgrind --tool=callgrind`
twice (no reads, then ROUNDS reads) and the difference over ROUNDS is its
instructions per read, which repeat from run to run on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from framelab.common.parser import Parser
from framelab.servers.modes import echo_batch
from framing import FramedProtocol, encode_frames
from framing._codec import pack_frames, split_frames, split_views
from framing.decoder import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_LARGE_FRAME,
    HEADER_SIZE,
    VIEW_MIN,
    FrameDecoder,
)

STAGES = ("split", "one call", "decoder", "protocol")
#: what runs per read in each stage
RUNS = {
    "split": "the split loop alone on a filled buffer: one object per frame",
    "one call": "one Python function: the split, the handler, packing the replies, the write",
    "decoder": "FrameDecoder.get_buffer() and buffer_updated(): the split and their checks",
    "protocol": "FramedProtocol, as the server runs: decoder, policy, handler, send",
}
MODULE = "framelab.benchmarks.read_path"  # run as -m, __name__ is __main__
_COLLECTED = re.compile(r"Collected : (\d+)")

Read = Callable[[], None]


class StubTransport:
    """Enough of a transport for FramedProtocol, its per-read methods C callables."""

    def __init__(self, expected: bytes) -> None:
        self.expected = expected
        self.write: Callable[[Any], object] = self._check_first
        self.is_closing: Callable[[], bool] = bool  # bool() is False
        self.get_write_buffer_size: Callable[[], int] = [].__len__  # always 0

    def _check_first(self, data: Any) -> None:
        if bytes(data) != self.expected:
            raise AssertionError("the stage did not echo its input byte for byte")
        self.write = len  # from now on: accept and drop, in C

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _wire(size: int, depth: int) -> bytes:
    return bytes(encode_frames([bytes([n % 251]) * size for n in range(depth)]))


def make_read(stage: str, size: int, depth: int, views: bool) -> Read:
    """One read of `stage`: the kernel's write into the buffer, then the stage."""
    wire = _wire(size, depth)
    n = len(wire)
    if stage == "split":
        buf = bytearray(DEFAULT_BUFFER_SIZE)
        buf[:n] = wire

        def split_only() -> None:
            if views:
                split_views(buf, 0, n, n, VIEW_MIN)
            else:
                split_frames(buf, 0, n, n)

        return split_only
    if stage == "decoder":
        return _through(FrameDecoder(views=views), wire)
    transport = StubTransport(wire)
    if stage == "one call":
        buf = bytearray(DEFAULT_BUFFER_SIZE)

        def one_call() -> None:
            buf[:n] = wire
            frames, _ = split_views(buf, 0, n, n, VIEW_MIN) if views else split_frames(buf, 0, n, n)
            transport.write(pack_frames(echo_batch(frames), 0, n, n + 1)[0])

        return one_call
    protocol = FramedProtocol(echo_batch, views=views)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return _through(protocol, wire)


class _ReadTarget(Protocol):
    """What the event loop reads into: a decoder, or a BufferedProtocol."""

    def get_buffer(self, sizehint: int) -> memoryview: ...

    def buffer_updated(self, nbytes: int) -> object: ...


def _through(target: _ReadTarget, wire: bytes) -> Read:
    """A read as the event loop makes it: `wire` into get_buffer(), then buffer_updated()."""
    n = len(wire)

    def read() -> None:
        room = target.get_buffer(-1)
        room[:n] = wire
        del room  # the loop lets go of the memory before the next read
        target.buffer_updated(n)

    return read


@dataclass
class StageCost:
    stage: str
    us_per_read: float
    instructions_per_read: float | None = None


async def _reads(stage: str, size: int, depth: int, views: bool, warm: int, rounds: int) -> float:
    """`warm` reads (caches, the allocator's free lists), then `rounds` more:
    µs per read of those (in a coroutine: FramedProtocol wants a running loop)."""
    read = make_read(stage, size, depth, views)
    for _ in range(warm):
        read()
    start = time.perf_counter()
    for _ in range(rounds):
        read()
    return (time.perf_counter() - start) / max(rounds, 1) * 1e6


def _instructions(stage: str, size: int, depth: int, views: bool, rounds: int) -> float | None:
    """Callgrind totals of ROUNDS reads minus those of none, over ROUNDS."""
    totals = []
    for count in (0, rounds):
        argv = [sys.executable, "-m", MODULE, "--child", stage, "--size", str(size)]
        argv += ["--depth", str(depth), "--rounds", str(count), "--views" if views else "--copy"]
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same start-up in both runs
        )
        found = _COLLECTED.search(done.stderr)
        if done.returncode != 0 or found is None:
            return None
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / rounds


def fits_one_read(size: int, depth: int) -> str | None:
    """Why DEPTH frames of SIZE are not one read of the small-frame path (None: they are)."""
    if size >= DEFAULT_LARGE_FRAME:
        return f"{size}-byte payloads are large frames (from {DEFAULT_LARGE_FRAME}): another path"
    if depth * (HEADER_SIZE + size) > DEFAULT_BUFFER_SIZE:
        return (
            f"{depth} frames of {size} bytes are {depth * (HEADER_SIZE + size)} bytes: "
            f"more than one read of the {DEFAULT_BUFFER_SIZE}-byte receive buffer"
        )
    return None


def measure(size: int, depth: int, views: bool, rounds: int, instructions: bool) -> list[StageCost]:
    why = fits_one_read(size, depth)
    if why is not None:
        raise ValueError(why)
    costs = []
    for stage in STAGES:
        us = asyncio.run(_reads(stage, size, depth, views, min(rounds, 2000), rounds))
        cost = StageCost(stage, us)
        if instructions:
            cost.instructions_per_read = _instructions(stage, size, depth, views, rounds // 4)
        costs.append(cost)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m framelab.benchmarks.read_path", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    parser.add_argument("--depth", type=int, default=32, help="frames per read (default 32)")
    parser.add_argument("--rounds", type=int, default=20000, help="reads per stage")
    parser.add_argument("--instructions", action="store_true", help="count them (valgrind)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--views", dest="views", action="store_true", default=True)
    mode.add_argument("--copy", dest="views", action="store_false", help="views=False")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    least_rounds = 0 if args.child is not None else 1  # a child may run none: the baseline
    if args.size < 0 or args.depth < 1 or args.rounds < least_rounds:
        parser.error("--size must be 0 or more, --depth and --rounds at least 1")
    if (why := fits_one_read(args.size, args.depth)) is not None:
        parser.error(why)
    if args.child is not None:
        asyncio.run(_reads(args.child, args.size, args.depth, args.views, 200, args.rounds))
        return 0
    costs = measure(args.size, args.depth, args.views, args.rounds, args.instructions)
    if args.json:
        print(json.dumps([asdict(c) for c in costs], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"one read of {args.depth} x {args.size} B frames, framed echo "
        f"({'views' if args.views else 'copies'})",
        title_justify="left",
    )
    for header in ("stage", "µs / read", "instructions / read", "what runs per read"):
        table.add_column(header, justify="right" if "/" in header else "left")
    for c in costs:
        count = "-" if c.instructions_per_read is None else f"{c.instructions_per_read:,.0f}"
        table.add_row(c.stage, f"{c.us_per_read:.2f}", count, RUNS[c.stage])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
