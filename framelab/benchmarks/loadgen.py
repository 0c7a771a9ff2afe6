"""The load generator: C connections, D frames of S bytes in flight on each.

Runs in a process of its own (`python -m framelab.benchmarks.loadgen SPEC_JSON`),
on uvloop when installed, and prints one JSON result line.

It must cost less per frame than any server it measures, so it never
parses the echo frame by frame. Every connection sends slices of a "tape":
N distinct frames (each payload stamped with its index) laid end to end,
with the first D frames repeated after the end so that any D consecutive
frames are one contiguous slice. An echo of any kind (raw, framed, a peer)
must send back exactly the bytes it got, in order, so each read is checked
with one memcmp against the tape at the expected offset: a lost, repeated,
reordered or corrupted byte fails the run, and frames completed are simply
bytes received // frame size. Per read: one compare, one division, at most
one write (of every frame the read completed, as one slice). Closed loop:
a frame goes out only when one came back, so D stay in flight.

Latency (D = 1) is timed per request from its send to the read that
completes its echo, into an HDR-style histogram; at D = 1 the send time
is the planned time (the loop sends as soon as the previous reply is in). asyncio and uvloop
turn TCP_NODELAY on, so no Nagle delay distorts the closed loop.
"""

from __future__ import annotations

import asyncio
import json
import resource
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from framelab.benchmarks.histogram import LatencyHistogram
from framelab.servers.process import process_stats
from framing.decoder import HEADER

STAMP = struct.Struct(">Q")
#: the receive buffer per connection (uvloop reads at most 256 KiB at a time)
READ_BUFFER = 256 * 1024
#: bytes of distinct frames on a tape (beyond the D repeated at its end)
TAPE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    size: int  # payload bytes per frame
    depth: int  # frames in flight per connection
    connections: int
    warmup: float  # seconds before the window
    duration: float  # seconds of the measuring window
    message: str = "bytes"  # or "msgpack": echo requests to the msgpack server
    server_pid: int | None = None  # whose CPU time to read over the window
    drain_timeout: float = 10.0


@dataclass
class LoadResult:
    frames: int = 0  # echoes completed in the window
    seconds: float = 0.0
    frames_per_s: float = 0.0
    payload_mb_per_s: float = 0.0
    server_cpu_s: float | None = None  # user + system, over the window
    server_user_s: float | None = None  # of which in user space
    #: share of all the machine's CPU time the hypervisor gave to others (steal)
    steal: float | None = None
    client_cpu_s: float = 0.0
    latency: dict[str, Any] | None = None
    error: str | None = None
    checked_bytes: int = 0  # every echoed byte of the run, compared with what was sent
    histogram: dict[str, Any] = field(default_factory=dict)


class Tape:
    """N distinct request frames end to end, plus the first `depth` again, and
    the replies an echo must send back, laid out the same way (module doc).

    Plain echo: a reply is the request itself. msgpack: a request is
    {"op": "echo", "id": ID, "args": BLOB} (the frame's payload is `size`
    bytes in all) and its reply {"id": ID, "ok": true, "result": BLOB}, as the
    msgpack server documents; ids are chosen so every frame has one size.
    """

    def __init__(self, size: int, depth: int, message: str = "bytes") -> None:
        self.count = max(4 * depth, 4, min(1024, TAPE_BYTES // (HEADER.size + size)))
        if message == "msgpack":
            requests, replies = _msgpack_frames(size, self.count)
        else:
            requests = replies = _stamped_frames(size, self.count)
        self.frame_size = len(requests[0])
        self.reply_size = len(replies[0])
        self.data = b"".join(requests + requests[:depth])
        self.view = memoryview(self.data)
        self.expected = self.data if replies is requests else b"".join(replies + replies[:depth])
        self.period = self.count * self.reply_size

    def frames_at(self, index: int, count: int) -> memoryview:
        """`count` consecutive frames from frame `index` (< self.count), one slice."""
        start = index * self.frame_size
        return self.view[start : start + count * self.frame_size]


def _stamped_frames(size: int, count: int) -> list[bytes]:
    """`count` frames of `size` payload bytes, each starting with its index."""
    pattern = bytes(range(256)) * (size // 256 + 1)
    frames = []
    for index in range(count):
        stamp = STAMP.pack(index)[-size:] if size < STAMP.size else STAMP.pack(index)
        frames.append(HEADER.pack(size) + stamp + pattern[len(stamp) : size])
    return frames


def _msgpack_frames(size: int, count: int) -> tuple[list[bytes], list[bytes]]:
    import msgpack

    first_id = 1 << 16  # ids 65536.. all pack as uint32: equal frame sizes
    overhead = len(msgpack.packb({"op": "echo", "id": first_id, "args": b""}))
    blob_size = max(size - overhead, 0)
    blob_size -= len(msgpack.packb(b"\0" * blob_size)) - blob_size - 2  # bin16/32 headers
    pattern = bytes(range(256)) * (blob_size // 256 + 1)
    requests, replies = [], []
    for index in range(count):
        blob = STAMP.pack(index)[:blob_size] + pattern[STAMP.size : blob_size]
        request = msgpack.packb({"op": "echo", "id": first_id + index, "args": blob})
        reply = msgpack.packb({"id": first_id + index, "ok": True, "result": blob})
        requests.append(HEADER.pack(len(request)) + request)
        replies.append(HEADER.pack(len(reply)) + reply)
    return requests, replies


class EchoLoad(asyncio.BufferedProtocol):
    """One connection of the closed loop. A BufferedProtocol: the kernel
    writes the echo into our buffer and it is compared there, with no bytes
    object made per read."""

    def __init__(self, tape: Tape, depth: int, timed: bool, failed: asyncio.Future[str]) -> None:
        self.tape = tape
        self.depth = depth
        self.timed = timed  # keep per-request latencies (D = 1)
        self.failed = failed
        self.histogram = LatencyHistogram()
        self.recording = False
        self.sending = True
        self.transport: asyncio.Transport | None = None
        self.sent = 0  # frames written
        self.done = 0  # frames echoed completely
        self.received = 0  # bytes
        self._next = 0  # tape index of the next frame to send
        self._offset = 0  # tape offset the next echoed byte must match
        self._sent_at = 0
        self._buffer = memoryview(bytearray(READ_BUFFER))
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._send(self.depth)

    def _send(self, count: int) -> None:
        assert self.transport is not None
        if self.timed:
            self._sent_at = time.perf_counter_ns()
        self.transport.write(self.tape.frames_at(self._next, count))
        self._next = (self._next + count) % self.tape.count
        self.sent += count

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        """One memcmp: is what arrived what the echo must send from here on?"""
        tape = self.tape
        if not tape.expected.startswith(self._buffer[:nbytes], self._offset):
            where = f"in the {nbytes} bytes from byte {self.received}"
            self._fail(f"the echo differs from what was sent {where}")
            return
        self._offset = (self._offset + nbytes) % tape.period
        self.received += nbytes
        done = self.received // tape.reply_size
        completed = done - self.done
        if not completed:
            return
        self.done = done
        if self.timed and self.recording:
            self.histogram.record(time.perf_counter_ns() - self._sent_at)
        if self.sending:
            self._send(completed)
        elif self.done == self.sent and not self.finished.done():
            self.finished.set_result(None)

    def stop_sending(self) -> None:
        self.sending = False
        if self.done == self.sent and not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done != self.sent or not self.finished.done():
            self._fail(f"connection lost with {self.sent - self.done} frames unanswered: {exc}")

    def _fail(self, why: str) -> None:
        if not self.failed.done():
            self.failed.set_result(why)
        if self.transport is not None:
            self.transport.abort()


def cpu_times(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a server (None: no server, or it is gone)."""
    if pid is None:
        return None
    try:
        stats = process_stats(pid)
    except OSError:
        return None
    return stats.user_seconds, stats.system_seconds


def cpu_clock() -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat's
    first line; None where there is none. Steal is time a virtual machine was
    ready to run but the hypervisor ran someone else: other tenants' load."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:]]
    # guest time is already counted in user time (the kernel's proc(5) says so)
    return ticks[7], sum(ticks[:8])


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _race(work: asyncio.Future[Any] | asyncio.Task[Any], failed: asyncio.Future[str]) -> None:
    """Wait for `work`, or raise as soon as a connection reports a failure."""
    await asyncio.wait([work, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        raise RuntimeError(failed.result())


def record_window(
    result: LoadResult,
    spec: LoadSpec,
    *,
    frames: int,
    seconds: float,
    client_cpu_s: float,
    server_cpu: tuple[tuple[float, float] | None, tuple[float, float] | None],
    machine: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None),
    checked_bytes: int,
    histograms: Sequence[LatencyHistogram] | None,
) -> None:
    """Fill `result` from one measured window; every client (ours, gRPC's) reports alike."""
    result.frames = frames
    result.seconds = seconds
    result.frames_per_s = frames / seconds
    result.payload_mb_per_s = result.frames_per_s * spec.size / 1e6
    result.client_cpu_s = client_cpu_s
    start_server, end_server = server_cpu
    if start_server is not None and end_server is not None:
        result.server_user_s = end_server[0] - start_server[0]
        result.server_cpu_s = result.server_user_s + end_server[1] - start_server[1]
    start_clock, end_clock = machine
    if start_clock is not None and end_clock is not None and end_clock[1] > start_clock[1]:
        result.steal = (end_clock[0] - start_clock[0]) / (end_clock[1] - start_clock[1])
    result.checked_bytes = checked_bytes
    if histograms is not None:
        merged = LatencyHistogram()
        for histogram in histograms:
            merged.merge(histogram)
        result.latency = merged.summary()
        result.histogram = {
            "buckets": merged.to_sparse(),
            "min_ns": merged.min_ns,
            "max_ns": merged.max_ns,
        }


async def run_load(spec: LoadSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    tape = Tape(spec.size, spec.depth, spec.message)
    failed: asyncio.Future[str] = loop.create_future()
    timed = spec.depth == 1
    conns: list[EchoLoad] = []
    result = LoadResult()
    try:
        for _ in range(spec.connections):
            _, proto = await loop.create_connection(
                lambda: EchoLoad(tape, spec.depth, timed, failed), spec.host, spec.port
            )
            conns.append(proto)
        await _race(asyncio.ensure_future(asyncio.sleep(spec.warmup)), failed)
        for c in conns:
            c.recording = True
        start_frames = sum(c.done for c in conns)
        start_time, start_cpu = time.perf_counter(), own_cpu()
        start_server, start_clock = cpu_times(spec.server_pid), cpu_clock()
        await _race(asyncio.ensure_future(asyncio.sleep(spec.duration)), failed)
        end_frames = sum(c.done for c in conns)
        end_time, end_cpu = time.perf_counter(), own_cpu()
        end_server, end_clock = cpu_times(spec.server_pid), cpu_clock()
        for c in conns:
            c.recording = False
            c.stop_sending()
        drained = asyncio.gather(*(c.finished for c in conns))
        try:
            await asyncio.wait_for(_race(drained, failed), spec.drain_timeout)
        except TimeoutError:
            missing = sum(c.sent - c.done for c in conns)
            raise RuntimeError(f"{missing} frames never came back") from None
        record_window(
            result,
            spec,
            frames=end_frames - start_frames,
            seconds=end_time - start_time,
            client_cpu_s=end_cpu - start_cpu,
            server_cpu=(start_server, end_server),
            machine=(start_clock, end_clock),
            checked_bytes=sum(c.received for c in conns),
            histograms=[c.histogram for c in conns] if timed else None,
        )
    except (RuntimeError, OSError) as error:
        result.error = str(error)
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    return result


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[0]))
    from framelab.servers.config import default_loop
    from framelab.servers.runner import run_on_loop  # the load generator's process only

    result = run_on_loop(default_loop(), run_load(spec))  # uvloop where installed
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
