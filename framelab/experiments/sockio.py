"""What the byte-stream experiments (sticky, nagle, flush, broken_pipe) share.

They all put a few bytes on a loopback connection and ask where the bytes
are: still in a user-space buffer, handed to the kernel, on the wire as how
many segments, readable at the peer yet. The answers come from plain
syscalls: select() for "readable now", TCP_INFO's data segment counter for
"how many segments left" (no root needed, unlike a capture), and the asyncio
logger for what an event loop says about a dead connection. The asyncio
experiments run on each loop of `event_loops()` (asyncio's own and uvloop),
because the two differ in exactly these details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: offset of tcpi_data_segs_out in struct tcp_info (linux/tcp.h, since 4.6):
#: 8 one-byte fields, 24 u32, 4 u64, then segs_out, segs_in, notsent_bytes,
#: min_rtt, data_segs_in, data_segs_out
_DATA_SEGS_OUT_OFFSET = 8 + 24 * 4 + 4 * 8 + 5 * 4
_TCP_INFO_SIZE = 256


def data_segments_out(sock: socket.socket) -> int | None:
    """Segments carrying data this socket has sent so far (None: kernel too old).

    The difference across a few writes says whether they left as one segment
    each or were held back and combined, which without root cannot be seen
    any other way.
    """
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(raw) < _DATA_SEGS_OUT_OFFSET + 4:
        return None
    count: int = struct.unpack_from("I", raw, _DATA_SEGS_OUT_OFFSET)[0]
    return count


def segments_since(sock: socket.socket, before: int | None) -> int | None:
    """Data segments sent since data_segments_out() said `before` (None: unknown)."""
    now = data_segments_out(sock)
    return None if now is None or before is None else now - before


def readable(sock: socket.socket, timeout: float) -> bool:
    """Does select() report `sock` readable within `timeout` seconds?"""
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def nodelay(sock: socket.socket | None) -> bool | None:
    """TCP_NODELAY as the kernel has it for this socket (None: no socket)."""
    if sock is None:
        return None
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def event_loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loops whose behaviour is reported: asyncio's default, and uvloop when installed."""
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return loops
    loops["uvloop"] = uvloop.new_event_loop
    return loops


def on_each_loop(scenario: Callable[[], Coroutine[Any, Any, T]]) -> dict[str, T]:
    """Run the coroutine `scenario()` returns once per event loop: {loop name: result}."""
    results: dict[str, T] = {}
    for name, factory in event_loops().items():
        with asyncio.Runner(loop_factory=factory) as runner:
            results[name] = runner.run(scenario())
    return results


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


@contextmanager
def asyncio_log() -> Iterator[list[str]]:
    """Collect what the event loops log to the "asyncio" logger inside the block.

    The messages are kept (as "LEVEL: text") instead of printed, so an
    experiment can report them; uvloop logs to the same logger.
    """
    logger = logging.getLogger("asyncio")
    collector = _Collector()
    propagate = logger.propagate
    logger.addHandler(collector)
    logger.propagate = False
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)
        logger.propagate = propagate


async def connect_streams(
    listener: socket.socket, *, sndbuf: int | None = None, timeout: float = 2.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    """An asyncio streams client connected to a plain listening socket.

    Returns (reader, writer, peer): `peer` is the accepted plain socket
    (blocking), so the experiment controls exactly when the peer reads or
    closes. `sndbuf` is set before connect, where it bounds the kernel's share.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, listener.getsockname()), timeout)
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        listener.settimeout(timeout)
        peer, _ = listener.accept()  # already in the accept queue: does not block
    except BaseException:
        writer.close()
        raise
    peer.settimeout(timeout)
    return reader, writer, peer


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer and wait for it, whatever state the connection is in."""
    writer.close()
    # a connection already lost reports its error here again
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
