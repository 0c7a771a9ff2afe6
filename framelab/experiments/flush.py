"""send() needs no flush; user-space buffers do (claim C31).

Four observations on loopback, each asking "can the peer read it yet?"
(select() on the peer) and "did a segment leave?" (TCP_INFO's data segment
counter; a capture as root):

- raw send() of a few bytes: the peer can read them at once.
- socket.makefile("wb"), a buffered wrapper: after write() of a small
  message nothing has left (no segment, the peer's select() times out);
  flush() sends it. A write larger than the wrapper's buffer goes through
  without flush(), since the wrapper only holds what fits.
- asyncio (default loop and uvloop): writer.write() with an empty transport
  buffer calls send() at once, so the peer can read the data before anything
  is awaited; drain() is not a flush.
- drain() is flow control: with a peer that does not read, writes past what
  the kernel takes pile up in the transport's buffer, above its high-water
  mark, and drain() waits until the peer reads and the buffer falls below
  the low-water mark. The limits are read back, not assumed: uvloop's
  default low-water mark is 16 bytes where asyncio's is 16 KiB (uvloop
  divides its 64 KiB high-water constant by 4 before scaling it to bytes),
  so uvloop's drain() waits until its buffer is all but empty.

Cost: about 1 MiB through loopback and a few short negative waits (nothing
arriving cannot be awaited): under 1 s, half that in quick mode.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import data_segments_out, segments_since
from framelab.lab.loops import close_writer, connect_streams, on_each_loop
from framelab.lab.packets import Packet
from framelab.lab.sockets import SocketOptions, connect_to, listening_socket, readable
from framelab.lab.timing import Stopwatch
from framelab.lab.traces import maybe_capture, short_trace, titled

NAME = "flush"
MESSAGE = b"hello"
EVENT_TIMEOUT = 2.0
#: how long "nothing arrives" is watched for (no event exists for it)
QUIET_WAIT = 0.2
QUICK_QUIET_WAIT = 0.1
#: kernel buffers in the flow-control case, so the transport's own buffer fills soon
SMALL_BUFFER = 64 * 1024
CHUNK = 64 * 1024


def segment_after(cap: Capture | None, port: int, since: float) -> float | None:
    """ms from `since` until the capture saw a data segment from `port` (None: not captured)."""
    if cap is None:
        return None
    packet = cap.wait_for(lambda p: is_data_from(p, port) and p.time >= since, EVENT_TIMEOUT)
    return None if packet is None else round((packet.time - since) * 1000, 3)


def is_data_from(packet: Packet, port: int) -> bool:
    return packet.proto == "tcp" and packet.sport == port and packet.payload_len > 0


def raw_send(listener: socket.socket, cap: Capture | None) -> dict[str, Any]:
    """send() then, at once, is it readable at the peer?"""
    with connect_to(listener) as pair:
        before = data_segments_out(pair.client)
        sent_at = time.monotonic()
        pair.client.send(MESSAGE)
        with Stopwatch() as sw:
            visible = readable(pair.server, EVENT_TIMEOUT)
        return {
            "peer_readable": visible,
            "peer_readable_after_ms": sw.ms,
            "peer_got": pair.server.recv(100).decode(),
            "segments_sent": segments_since(pair.client, before),
            "captured_segment_after_ms": segment_after(cap, pair.client_port, sent_at),
        }


def buffered_wrapper(listener: socket.socket, cap: Capture | None, quiet: float) -> dict[str, Any]:
    """makefile("wb"): write() keeps the bytes in the process until flush()."""
    with connect_to(listener) as pair, pair.client.makefile("wb") as wrapper:
        before = data_segments_out(pair.client)
        wrapper.write(MESSAGE)
        seen_before_flush = readable(pair.server, quiet)
        segments_before_flush = segments_since(pair.client, before)
        captured_before_flush = (
            None if cap is None else any(is_data_from(p, pair.client_port) for p in cap.packets)
        )
        flushed_at = time.monotonic()
        wrapper.flush()
        with Stopwatch() as sw:
            seen_after_flush = readable(pair.server, EVENT_TIMEOUT)
        got = pair.server.recv(100)
        segments_after_flush = segments_since(pair.client, before)
        large = bytes(io.DEFAULT_BUFFER_SIZE + 1)
        wrapper.write(large)  # more than the wrapper holds: written through
        large_seen = readable(pair.server, EVENT_TIMEOUT)
        return {
            "wrapper": type(wrapper).__name__,
            "wrapper_buffer_bytes": io.DEFAULT_BUFFER_SIZE,
            "peer_readable_after_write": seen_before_flush,
            "watched_for_ms": round(quiet * 1000),
            "segments_after_write": segments_before_flush,
            "captured_data_before_flush": captured_before_flush,
            "peer_readable_after_flush": seen_after_flush,
            "peer_readable_after_flush_ms": sw.ms,
            "peer_got": got.decode(),
            "segments_after_flush": segments_after_flush,
            "captured_segment_after_flush_ms": segment_after(cap, pair.client_port, flushed_at),
            "larger_than_buffer_sent_without_flush": large_seen,
        }


# -- asyncio and uvloop ---------------------------------------------------------------------
def read_in_thread(peer: socket.socket, total: int, progress: list[int]) -> threading.Thread:
    """A peer that starts reading now, until `total` bytes; progress[0] counts them."""

    def read() -> None:
        while progress[0] < total:
            chunk = peer.recv(1 << 20)
            if not chunk:
                return
            progress[0] += len(chunk)

    thread = threading.Thread(target=read, name="flush-peer", daemon=True)
    thread.start()
    return thread


async def write_is_a_send(writer: asyncio.StreamWriter, peer: socket.socket) -> dict[str, Any]:
    """write() with an empty buffer: the peer can read before anything is awaited."""
    writer.write(MESSAGE)
    buffered = writer.transport.get_write_buffer_size()
    visible = readable(peer, EVENT_TIMEOUT)  # blocks the loop on purpose: nothing else runs
    got = peer.recv(100)
    with Stopwatch() as sw:
        await writer.drain()
    return {
        "buffered_after_write": buffered,
        "peer_readable_before_drain": visible,
        "peer_got": got.decode(),
        "drain_with_empty_buffer_ms": sw.ms,
    }


async def drain_is_flow_control(
    writer: asyncio.StreamWriter, peer: socket.socket, quiet: float
) -> dict[str, Any]:
    """Fill past the high-water mark with a peer that does not read; then let it read."""
    transport = writer.transport
    low, high = transport.get_write_buffer_limits()
    written = 0
    while transport.get_write_buffer_size() <= high:
        writer.write(bytes(CHUNK))
        written += CHUNK
    buffered = transport.get_write_buffer_size()
    drain = asyncio.ensure_future(writer.drain())
    done, _ = await asyncio.wait({drain}, timeout=quiet)
    blocked = not done
    progress = [0]
    reader = read_in_thread(peer, written, progress)
    read_started = time.perf_counter()
    await asyncio.wait_for(drain, EVENT_TIMEOUT)
    drained_ms = round((time.perf_counter() - read_started) * 1000, 3)
    read_when_drained = progress[0]
    await asyncio.to_thread(reader.join, EVENT_TIMEOUT)
    return {
        "write_buffer_limits": {"low": low, "high": high},
        "written_without_drain": written,
        "buffered_when_drain_called": buffered,
        "drain_blocked_while_peer_idle": blocked,
        "watched_for_ms": round(quiet * 1000),
        "drain_returned_after_peer_started_reading_ms": drained_ms,
        "peer_had_read_when_drain_returned": read_when_drained,
        "buffered_after_drain": transport.get_write_buffer_size(),
        "peer_read_everything": progress[0] == written,
    }


async def asyncio_writes(quiet: float) -> dict[str, Any]:
    listener = listening_socket(options=SocketOptions(rcvbuf=SMALL_BUFFER))
    try:
        _, writer, peer = await connect_streams(listener, client=SocketOptions(sndbuf=SMALL_BUFFER))
        try:
            return {
                **await write_is_a_send(writer, peer),
                **await drain_is_flow_control(writer, peer, quiet),
            }
        finally:
            await close_writer(writer)
            peer.close()
    finally:
        listener.close()


# -- the claim ------------------------------------------------------------------------------
def run(ctx: RunContext) -> list[ClaimResult]:
    quiet = QUICK_QUIET_WAIT if ctx.quick else QUIET_WAIT
    listener = listening_socket()
    port = listener.getsockname()[1]
    try:
        with maybe_capture(ctx.can_capture, ports=[port]) as cap:
            raw = raw_send(listener, cap)
            wrapped = buffered_wrapper(listener, cap, quiet)
            trace = titled(
                "send() and flush(): each data segment leaves at once",
                [line for line in short_trace(cap, port) if "length 0" not in line][:8],
            )
    finally:
        listener.close()
    loops: dict[str, dict[str, Any]] = on_each_loop(lambda: asyncio_writes(quiet))
    return [judge_c31(raw, wrapped, loops, trace)]


def judge_c31(
    raw: dict[str, Any],
    wrapped: dict[str, Any],
    loops: dict[str, dict[str, Any]],
    trace: list[str],
) -> ClaimResult:
    raw_at_once = raw["peer_readable"] and raw["peer_got"] == MESSAGE.decode()
    held_until_flush = (
        not wrapped["peer_readable_after_write"]
        and wrapped["segments_after_write"] in (0, None)
        and not wrapped["captured_data_before_flush"]
        and wrapped["peer_readable_after_flush"]
        and wrapped["peer_got"] == MESSAGE.decode()
    )
    loops_send_at_once = {
        name: seen["peer_readable_before_drain"] and seen["buffered_after_write"] == 0
        for name, seen in loops.items()
    }
    flow_control = {
        name: seen["drain_blocked_while_peer_idle"] and seen["peer_read_everything"]
        for name, seen in loops.items()
    }
    observed = {
        "raw_send": raw,
        "makefile_wb": wrapped,
        "event_loops": loops,
        "write_sent_before_drain": loops_send_at_once,
        "drain_waits_for_reading_peer": flow_control,
    }
    drains = ", ".join(
        f"{name} {'waited' if flow_control[name] else 'did not wait'} with "
        f"{seen['buffered_when_drain_called']} bytes buffered (high water "
        f"{seen['write_buffer_limits']['high']})"
        for name, seen in loops.items()
    )
    segments = wrapped["segments_after_write"]
    parts = [
        Part(
            "a socket write needs no flush: the data is handed to TCP at once",
            raw_at_once,
            f"after send() the peer was readable in {raw['peer_readable_after_ms']:g} ms and got "
            f"{'the message' if raw['peer_got'] == MESSAGE.decode() else repr(raw['peer_got'])},"
            " with no flush",
        ),
        Part(
            "only a user-space buffered wrapper needs flush()",
            held_until_flush,
            f"makefile('wb').write(): peer readable before flush: "
            f"{wrapped['peer_readable_after_write']} ({wrapped['watched_for_ms']} ms watched, "
            + ("segments not captured" if segments is None else f"{segments} segments")
            + f"); after flush(): {wrapped['peer_readable_after_flush']}",
        ),
        Part(
            "the event loops' write() hands data to TCP at once too (drain() is flow control)",
            all(loops_send_at_once.values()),
            "; ".join(
                f"{name}: peer readable before drain() {seen['peer_readable_before_drain']}, "
                f"{seen['buffered_after_write']} bytes left buffered"
                for name, seen in loops.items()
            )
            + f"; {drains}",
        ),
    ]
    return judge_parts(NAME, "C31", parts, observed, trace=trace)


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C31",),
    needs_root="no",
    description=(
        "send() reaches the peer with no flush; makefile('wb') holds data until flush();"
        " asyncio write() sends at once and drain() is flow control"
    ),
    run=run,
)
