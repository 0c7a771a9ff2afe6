"""`framelab soak`: many connections, random frame sizes, every reply checked.

A bounded load (N connections for S seconds) against a framed or msgpack echo
server, started here as a child process (`framelab serve`) unless --connect
names one. Each connection keeps --depth frames in flight; every payload
carries (connection, sequence number, CRC-32 of its body), so each reply is
checked to be the very next one expected, complete and intact:
- lost: a sequence number skipped, or no reply by the end (after a drain
  period once the time is up);
- duplicated: a sequence number already answered;
- corrupted: wrong length, checksum or connection id, or not the echo at all;
- errors: connections the server closed or reset during the run.
Sizes are log-uniform from 0 to --max-size bytes (mostly small, some large
enough for the decoder's large-frame path). Afterwards the server's
descriptor count must return to its baseline, its peak RSS is reported, and
it must shut down with exit status 0 on SIGTERM.

With --restart-every SECONDS the server gets SIGHUP that often (a rolling
restart: every worker replaced) and the load changes shape, because a
retiring worker ends its long-lived connections (answers, then FIN): each of
the N clients instead runs short connections one after another (connect,
--depth frames, half-close, every reply checked, the server's FIN), so a
connection refused, reset or left unanswered by a restart is a failure.
Reported: restarts, connections attempted, connections failed.

Cost: one event loop in this process; memory about connections x depth x
max-size for the frames in flight, plus one random block of max-size bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import os
import random
import signal
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

import msgpack

from framelab.common.argtypes import (
    address,
    host_port,
    non_negative_int,
    positive_duration,
    positive_int,
    size,
)
from framelab.common.options import STDOUT, add_json_option
from framelab.common.oserrors import describe_os_error
from framelab.common.words import plural
from framelab.servers.config import IoStyle, LoopName
from framelab.servers.modes import FRAMED_MODES
from framelab.servers.process import ServerProcess, process_stats, raise_fd_limit, wait_for_stats
from framing.decoder import FrameDecoder, Payload
from framing.encoder import encode_frames
from framing.errors import FramingError
from framing.protocol import FramedProtocol

#: connection id, sequence number, CRC-32 of the body, then the body
PROBE = struct.Struct(">IQI")
CONNECT_BATCH = 64  # connections opened at a time (stays under listen backlogs)
DRAIN_SECONDS = 10.0  # once time is up, how long replies still in flight may take
READ_LIMIT = 1 << 20  # bytes per read of a short connection
ROLLING_DONE = "rolling restart done"  # the supervisor's line after a SIGHUP


@dataclass
class SoakOptions:
    connections: int = 500
    seconds: float = 10.0
    max_size: int = 256 * 1024
    depth: int = 4
    mode: str = "framed"
    server_loop: str = "uvloop"
    io: str = "protocol"
    connect: tuple[str, int] | None = None  # an external server; else one is started
    server_pid: int | None = None  # the external server's pid, for its figures
    seed: int = 1
    restart_every: float | None = None  # seconds between SIGHUPs (rolling restarts)


@dataclass
class SoakResult:
    connections: int
    seconds: float
    frames: int = 0  # replies received intact and in order
    payload_bytes: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    errors: int = 0  # connections closed or reset by the server mid-run
    largest_frame: int = 0
    frames_per_second: float = 0.0
    mib_per_second: float = 0.0
    server_fds_before: int | None = None
    server_fds_after: int | None = None
    server_rss_before: int | None = None
    server_peak_rss: int | None = None
    server_exit: int | None = None
    restarts: int = 0  # SIGHUPs sent (--restart-every)
    restarts_done: int | None = None  # rolling restarts the server reported finished
    connections_attempted: int = 0  # short connections opened (--restart-every)
    connections_failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, described
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Probes:
    """Builds payloads and checks replies for one connection."""

    def __init__(self, conn_id: int, options: SoakOptions, block: bytes) -> None:
        self.conn_id = conn_id
        self.block = block
        self.max_body = max(options.max_size - PROBE.size, 0)
        self.msgpack = options.mode == "msgpack"
        self.random = random.Random(options.seed * 1_000_003 + conn_id)
        self.next_seq = 0

    def make(self) -> tuple[bytes, tuple[int, int]]:
        """(frame payload, (sequence number, payload length))."""
        size = int((self.max_body + 1) ** self.random.random()) - 1  # log-uniform 0..max
        start = self.random.randrange(len(self.block) - size + 1)
        body = self.block[start : start + size]
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        probe = PROBE.pack(self.conn_id, seq, zlib.crc32(body)) + body
        if self.msgpack:
            return msgpack.packb({"op": "echo", "id": seq, "args": probe}), (seq, len(probe))
        return probe, (seq, len(probe))

    def read(self, reply: Payload) -> tuple[int, int] | None:
        """(sequence number, probe length) if the reply is an intact echo, else None."""
        probe: Any = reply
        if self.msgpack:
            try:
                message = msgpack.unpackb(reply)
                probe = message["result"] if message.get("ok") else None
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
        if not isinstance(probe, bytes | bytearray) or len(probe) < PROBE.size:
            return None
        conn_id, seq, crc = PROBE.unpack_from(probe)
        if conn_id != self.conn_id or zlib.crc32(memoryview(probe)[PROBE.size :]) != crc:
            return None
        return seq, len(probe)


class SoakConnection(FramedProtocol):
    """One closed-loop client: `depth` frames in flight until the deadline."""

    def __init__(self, probes: Probes, depth: int, deadline: float, result: SoakResult) -> None:
        super().__init__(frame_timeout=None)
        self.probes = probes
        self.depth = depth
        self.deadline = deadline
        self.result = result
        self.in_flight: collections.deque[tuple[int, int]] = collections.deque()
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._send(self.depth)

    def frames_received(self, frames: list[Payload]) -> None:
        result = self.result
        for reply in frames:
            got = self.probes.read(reply)
            if got is None:
                result.corrupted += 1
                if self.in_flight:
                    self.in_flight.popleft()
                continue
            seq, length = got
            while self.in_flight and self.in_flight[0][0] < seq:  # skipped: lost
                self.in_flight.popleft()
                result.lost += 1
            if not self.in_flight or self.in_flight[0][0] != seq:
                result.duplicated += 1
                continue
            expected_length = self.in_flight.popleft()[1]
            if length != expected_length:
                result.corrupted += 1
                continue
            result.frames += 1
            result.payload_bytes += length
            result.largest_frame = max(result.largest_frame, length)
        if self._loop.time() < self.deadline:
            self._send(self.depth - len(self.in_flight))
        elif not self.in_flight and not self.finished.done():
            self.finished.set_result(None)

    def _send(self, count: int) -> None:
        payloads = []
        for _ in range(count):
            payload, expected = self.probes.make()
            payloads.append(payload)
            self.in_flight.append(expected)
        self.send_frames(payloads)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.finished.done():  # the server ended it before we were done
            self.result.errors += 1
            self.finished.set_result(None)


async def drive(options: SoakOptions, address: tuple[str, int], result: SoakResult) -> None:
    """Open the connections, run them until the deadline, drain, close."""
    loop = asyncio.get_running_loop()
    block = random.Random(options.seed).randbytes(max(options.max_size, 1))
    deadline = loop.time() + options.seconds  # provisional, set again once all are open
    conns: list[SoakConnection] = []

    def factory(conn_id: int) -> SoakConnection:
        probes = Probes(conn_id, options, block)
        return SoakConnection(probes, options.depth, deadline, result)

    for first in range(0, options.connections, CONNECT_BATCH):
        ids = range(first, min(first + CONNECT_BATCH, options.connections))
        opened = await asyncio.gather(
            *(loop.create_connection(functools.partial(factory, i), *address) for i in ids)
        )
        conns += [protocol for _, protocol in opened]
    started = loop.time()
    for conn in conns:
        conn.deadline = started + options.seconds
    await asyncio.wait([c.finished for c in conns], timeout=options.seconds + DRAIN_SECONDS)
    elapsed = loop.time() - started
    for conn in conns:
        result.lost += len(conn.in_flight)  # no reply by the end of the drain period
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.wait([c.closed for c in conns], timeout=DRAIN_SECONDS)
    result.frames_per_second = result.frames / elapsed
    result.mib_per_second = result.payload_bytes / elapsed / (1 << 20)


MAX_FAILURES_KEPT = 10


async def short_connection(
    probes: Probes, depth: int, address: tuple[str, int], result: SoakResult
) -> None:
    """One connection: `depth` probes, half-close, every reply, then the FIN."""
    result.connections_attempted += 1
    sent = [probes.make() for _ in range(depth)]
    try:
        reader, writer = await asyncio.open_connection(*address, limit=READ_LIMIT)
        try:
            writer.write(encode_frames([payload for payload, _ in sent]))
            writer.write_eof()
            decoder = FrameDecoder(max_frame_length=probes.max_body + 1024)
            replies: list[Payload] = []
            while data := await asyncio.wait_for(reader.read(READ_LIMIT), DRAIN_SECONDS):
                replies += decoder.feed(data)
            decoder.end_of_stream()
        finally:
            writer.close()
    except (OSError, TimeoutError, FramingError) as error:
        _fail(result, f"{type(error).__name__}: {error}")
        return
    got = [probes.read(reply) for reply in replies]
    expected = [(seq_and_length[0], seq_and_length[1]) for _, seq_and_length in sent]
    if got != expected:
        _fail(result, f"{len(replies)} of {depth} replies intact and in order")
        return
    result.frames += depth
    for _, (_, length) in sent:
        result.payload_bytes += length
        result.largest_frame = max(result.largest_frame, length)


def _fail(result: SoakResult, why: str) -> None:
    result.connections_failed += 1
    if len(result.failures) < MAX_FAILURES_KEPT:
        result.failures.append(why)


async def drive_short(
    options: SoakOptions,
    address: tuple[str, int],
    result: SoakResult,
    hangup: Callable[[], None],
) -> None:
    """N clients, each running short connections back to back until the
    deadline, while the server gets SIGHUP every restart_every seconds."""
    assert options.restart_every is not None
    loop = asyncio.get_running_loop()
    block = random.Random(options.seed).randbytes(max(options.max_size, 1))
    started = loop.time()
    deadline = started + options.seconds

    async def client(conn_id: int) -> None:
        probes = Probes(conn_id, options, block)
        while loop.time() < deadline:
            await short_connection(probes, options.depth, address, result)

    async def restarts() -> None:
        while loop.time() + options.restart_every < deadline:  # type: ignore[operator]
            await asyncio.sleep(options.restart_every)  # type: ignore[arg-type]
            hangup()
            result.restarts += 1

    clients = [asyncio.ensure_future(client(i)) for i in range(options.connections)]
    restarter = asyncio.ensure_future(restarts())
    await asyncio.gather(*clients)
    restarter.cancel()
    elapsed = loop.time() - started
    result.frames_per_second = result.frames / elapsed
    result.mib_per_second = result.payload_bytes / elapsed / (1 << 20)


def soak(options: SoakOptions) -> SoakResult:
    """Run one soak; the result lists every problem found (empty: passed)."""
    from framelab.servers.runner import run_on_loop  # imports uvloop: only when running

    raise_fd_limit(2 * options.connections + 256)  # client and server (inherited)
    result = SoakResult(options.connections, options.seconds)
    server: ServerProcess | None = None
    if options.connect is None:
        server = ServerProcess(
            [
                *("--mode", options.mode, "--loop", options.server_loop, "--io", options.io),
                *("--max-connections", str(options.connections + 16)),
                *("--backlog", str(max(options.connections, 128))),
                *("--max-frame", str(max(options.max_size + 64, 1024))),
                *("--log-level", "WARNING" if options.restart_every is None else "INFO"),
            ]
        )
        server.start()
    pid = server.pid if server is not None else options.server_pid
    address = server.address if server is not None else options.connect
    assert address is not None
    try:
        if pid is not None:
            before = process_stats(pid)
            result.server_fds_before, result.server_rss_before = before.fds, before.rss
        if options.restart_every is None:
            run_on_loop("uvloop", drive(options, address, result))
        else:
            signalled = pid
            assert signalled is not None  # options_from_args insists on a pid
            run_on_loop(
                "uvloop",
                drive_short(options, address, result, lambda: os.kill(signalled, signal.SIGHUP)),
            )
            if server is not None:  # the last restart may still be under way
                server.wait_for_log(ROLLING_DONE, timeout=60, start=_nth_done(server, result))
                result.restarts_done = sum(ROLLING_DONE in line for line in server.log)
        if pid is not None:
            # the server closes its ends a moment after we do
            after = wait_for_stats(pid, lambda s: s.fds <= before.fds, timeout=5.0)
            result.server_fds_after, result.server_peak_rss = after.fds, after.peak_rss
        if server is not None:
            server.send_signal(signal.SIGTERM)
            result.server_exit = server.wait(timeout=30)
    finally:
        if server is not None:
            server.kill()
    _judge(result)
    return result


def _nth_done(server: ServerProcess, result: SoakResult) -> int:
    """The log index after which the last restart's "done" line must come."""
    done = [i for i, line in enumerate(server.log) if ROLLING_DONE in line]
    return done[result.restarts - 1] if 0 < result.restarts <= len(done) else len(server.log)


def _judge(result: SoakResult) -> None:
    if result.connections_failed:
        result.problems.append(
            f"{result.connections_failed} of {result.connections_attempted} connections failed"
        )
    if result.restarts_done is not None and result.restarts_done < result.restarts:
        result.problems.append(f"{result.restarts_done} of {result.restarts} restarts finished")
    for name in ("lost", "duplicated", "corrupted", "errors"):
        if getattr(result, name):
            result.problems.append(f"{getattr(result, name)} {name}")
    if result.frames == 0:
        result.problems.append("no reply at all")
    if result.server_fds_before is not None and result.server_fds_after != result.server_fds_before:
        result.problems.append(
            f"server descriptors {result.server_fds_before} before, {result.server_fds_after} after"
        )
    if result.server_exit not in (None, 0):
        result.problems.append(f"server exit status {result.server_exit} after SIGTERM")


# -- command line ------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    d = SoakOptions()
    a = parser.add_argument
    a(
        "--connections",
        type=positive_int,
        default=d.connections,
        metavar="N",
        help="concurrent connections",
    )
    a(
        "--seconds",
        type=positive_duration,
        default=d.seconds,
        metavar="SECONDS",
        help="how long to send",
    )
    a("--max-size", type=size, default=d.max_size, metavar="BYTES", help="largest payload")
    a(
        "--depth",
        type=positive_int,
        default=d.depth,
        metavar="N",
        help="frames in flight per connection",
    )
    a("--mode", choices=FRAMED_MODES, default=d.mode, help="server mode")
    a(
        "--server-loop",
        choices=get_args(LoopName),
        default=d.server_loop,
        help="the started server's event loop",
    )
    a("--io", choices=get_args(IoStyle), default=d.io, help="server I/O style")
    a(
        "--connect",
        type=host_port,
        metavar="HOST:PORT",
        help="soak a running server instead of starting one",
    )
    a(
        "--server-pid",
        type=positive_int,
        metavar="PID",
        help="with --connect: its pid, for descriptors and RSS",
    )
    a(
        "--seed",
        type=non_negative_int,
        default=d.seed,
        metavar="N",
        help="random seed for sizes and contents",
    )
    a(
        "--restart-every",
        type=positive_duration,
        metavar="SECONDS",
        help="send the server SIGHUP (a rolling restart) this often; clients then use "
        "short connections, and each one refused, reset or unanswered is a failure",
    )
    add_json_option(parser, "the result")


def options_from_args(args: argparse.Namespace) -> SoakOptions:
    return SoakOptions(
        connections=args.connections,
        seconds=args.seconds,
        max_size=args.max_size,
        depth=args.depth,
        mode=args.mode,
        server_loop=args.server_loop,
        io=args.io,
        connect=args.connect,
        server_pid=args.server_pid,
        seed=args.seed,
        restart_every=args.restart_every,
    )


def summary(result: SoakResult) -> str:
    mib = 1 << 20
    lines = [
        f"{plural(result.connections, 'connection')}, {result.seconds:g} s: "
        f"{plural(result.frames, 'reply', 'replies')} verified ({result.frames_per_second:,.0f}/s, "
        f"{result.mib_per_second:.1f} MiB/s, largest {result.largest_frame} bytes)",
        f"lost {result.lost}, duplicated {result.duplicated}, corrupted {result.corrupted}, "
        f"connection errors {result.errors}",
    ]
    if result.server_fds_before is not None:
        lines.append(
            f"server descriptors {result.server_fds_before} before, {result.server_fds_after} after"
        )
    if result.server_peak_rss is not None and result.server_rss_before is not None:
        lines.append(
            f"server RSS {result.server_rss_before / mib:.1f} MiB before, "
            f"peak {result.server_peak_rss / mib:.1f} MiB"
        )
    if result.server_exit is not None:
        lines.append(f"server exit status after SIGTERM: {result.server_exit}")
    if result.connections_attempted:
        done = "" if result.restarts_done is None else f", {result.restarts_done} finished"
        lines.append(
            f"restarts {result.restarts} (SIGHUP{done}), "
            f"connections {result.connections_attempted}, failed {result.connections_failed}"
        )
        lines += [f"  failure: {why}" for why in result.failures]
    lines.append("PASS" if result.ok else "FAIL: " + "; ".join(result.problems))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if options.restart_every is not None and options.connect and options.server_pid is None:
        print("framelab soak: --restart-every with --connect needs --server-pid", file=sys.stderr)
        return 2
    try:
        result = soak(options)
    except OSError as error:  # no server there, or it refused us: nothing was measured
        where = address(*options.connect) if options.connect else "the started server"
        print(
            f"framelab soak: cannot connect to {where}: {describe_os_error(error)}", file=sys.stderr
        )
        return 1
    document = json.dumps({**asdict(result), "ok": result.ok}, indent=2)
    if args.json == STDOUT:
        print(document)
    else:
        print(summary(result))
        if args.json:
            with open(args.json, "w") as out:
                out.write(document + "\n")
    return 0 if result.ok else 1
