"""Event loops in the lab: each loop a scenario runs on, streams to a plain peer, the log.

Experiments on asyncio behaviour run on each loop of `event_loops()`
(asyncio's own and uvloop), because the two differ in exactly the details
the lab looks at (what a write to a dead connection does, TCP_NODELAY).
The peer of a stream is a plain blocking socket, so the experiment decides
exactly when it reads or closes; what a loop logs is collected, not printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from framelab.lab.sockets import CONNECT_TIMEOUT, NO_OPTIONS, SocketOptions

T = TypeVar("T")


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
    listener: socket.socket, *, client: SocketOptions = NO_OPTIONS, timeout: float = CONNECT_TIMEOUT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    """An asyncio streams client connected to a plain listening socket.

    Returns (reader, writer, peer): `peer` is the accepted plain socket
    (blocking), so the experiment controls exactly when the peer reads or
    closes. `client` options are set before connect (a small SO_SNDBUF bounds
    the kernel's share).
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.apply_before_connect(sock)
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
