"""Per-connection handlers: a mode (servers/modes.py) on an I/O style.

The protocol style subclasses framing.FramedProtocol (the library's fast
path); the streams style runs framing.serve_frames in one task per
connection. Both are the library's adapters over the same ConnectionPolicy,
so frame timeout, error reply, graceful drain and the discard after our FIN
behave identically; this module adds only what a server adds: socket
options, admission under the connection cap (with the mode's busy reply),
the connection's origin (the PROXY header's client behind a balancer, see
servers/proxy_gate.py) and the per-connection log of refused requests. Raw
mode echoes bytes as read and reports each read's size (the evidence for
sticky packets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from framelab.servers import msgpack_app
from framelab.servers.config import ServerConfig
from framelab.servers.connections import ConnectionSet, apply_socket_options
from framelab.servers.modes import RefusalLog, ServerMode, server_mode
from framelab.servers.proxy_gate import InnerFactory, Origin, ProxyHeaderGate, origin_of
from framing import FramedProtocol, framed_streams, serve_frames, unread_kernel_bytes
from framing.streams import READ_SIZE

log = logging.getLogger("framelab.server")


def report_read(config: ServerConfig, peer: str, size: int) -> None:
    """The raw echo's evidence of sticky packets: each read's size, logged and/or observed."""
    if config.log_reads:
        log.info("read %d bytes from %s", size, peer)
    if config.on_read is not None:
        config.on_read(peer, size)


# -- protocol style ----------------------------------------------------------
class RawEchoProtocol(asyncio.Protocol):
    """Echo bytes exactly as read; log (and report) every read's size."""

    def __init__(
        self, config: ServerConfig, connections: ConnectionSet, origin: Origin | None = None
    ) -> None:
        self.config = config
        self.connections = connections
        self.origin = origin
        self.peer = "?"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = (self.origin or origin_of(transport)).client
        apply_socket_options(transport, self.config)
        self.transport.set_write_buffer_limits(high=self.config.high_water)
        if not self.connections.admit(self):
            transport.close()

    def data_received(self, data: bytes) -> None:
        report_read(self.config, self.peer, len(data))
        assert self.transport is not None
        self.transport.write(data)
        if self._stopping:
            self.begin_shutdown()

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def begin_shutdown(self) -> None:
        self._stopping = True
        transport = self.transport
        if transport is not None and unread_kernel_bytes(transport) == 0:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ServerFramedProtocol(FramedProtocol):
    """FramedProtocol plus what a server adds: options, admission, origin, refusals logged."""

    def __init__(
        self,
        config: ServerConfig,
        mode: ServerMode,
        connections: ConnectionSet,
        origin: Origin | None = None,
    ) -> None:
        self.refusals = RefusalLog()
        self.origin = origin
        self.session = msgpack_app.Session(state=connections.state)
        super().__init__(
            mode.application(self.refusals, self.session, config.observer),
            max_frame_length=config.max_frame,
            frame_timeout=config.frame_timeout,
            high_water=config.high_water,
            error_reply=mode.error_reply,
            observer=config.observer,
            views=mode.views,
        )
        self.config = config
        self.mode = mode
        self.connections = connections

    def describe_peer(self, transport: asyncio.BaseTransport) -> str:
        self.origin = self.origin or origin_of(transport)
        return self.origin.client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.origin is not None  # set by describe_peer
        self.refusals.peer = self.peer
        self.session.peer = self.origin.as_result()
        apply_socket_options(transport, self.config)
        if not self.connections.admit(self):
            busy = self.mode.busy_reply()
            if busy is not None:
                self.send_frame(busy)
            transport.close()


def behind_proxy(
    config: ServerConfig, connections: ConnectionSet, inner: InnerFactory
) -> Callable[[], asyncio.BaseProtocol]:
    """Every connection starts with the PROXY header gate when the config asks
    for it (--proxy-protocol); otherwise straight with the mode's protocol."""
    if not config.proxy_protocol:
        return lambda: inner(None)
    return lambda: ProxyHeaderGate(inner, connections, timeout=config.frame_timeout)


def protocol_factory(
    config: ServerConfig, connections: ConnectionSet
) -> Callable[[], asyncio.BaseProtocol]:
    mode = server_mode(config)
    if not mode.framed:
        return behind_proxy(config, connections, lambda o: RawEchoProtocol(config, connections, o))
    return behind_proxy(
        config, connections, lambda o: ServerFramedProtocol(config, mode, connections, o)
    )


# -- streams style -----------------------------------------------------------
class StreamConnection:
    """One framed connection served by a task over asyncio streams."""

    def __init__(
        self,
        config: ServerConfig,
        mode: ServerMode,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: Origin | None = None,
    ) -> None:
        self.origin = origin or origin_of(writer.transport)
        self.peer = self.origin.client
        self.frames, self.out = framed_streams(
            reader,
            writer,
            config.max_frame,
            peer=self.peer,
            frame_timeout=config.frame_timeout,
            error_reply=mode.error_reply,
            observer=config.observer,
            views=mode.views,
        )
        self.writer = writer
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def begin_shutdown(self) -> None:
        self.frames.begin_shutdown()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def serve(self, config: ServerConfig, mode: ServerMode, state: Any) -> None:
        refusals = RefusalLog()
        refusals.peer = self.peer
        session = msgpack_app.Session(self.origin.as_result(), state)
        handler = mode.application(refusals, session, config.observer)
        assert handler is not None, "raw mode is served by RawStreamConnection"
        try:
            await serve_frames(self.frames, self.out, handler)
        finally:
            self.finished()

    def finished(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class RawStreamConnection:
    """The raw echo over streams: bytes back as read, each read's size reported."""

    def __init__(
        self,
        config: ServerConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: Origin | None = None,
    ) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self.peer = (origin or origin_of(writer.transport)).client
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopping = False
        self._eof_fed = False

    def begin_shutdown(self) -> None:
        self._stopping = True
        self._finish_if_idle()

    def abort(self) -> None:
        self.writer.transport.abort()

    def _finish_if_idle(self) -> None:
        """Stop taking bytes from the kernel once none are waiting there; the
        loop then echoes what asyncio already buffered, then ends."""
        transport = self.writer.transport
        if not self._eof_fed and unread_kernel_bytes(transport) == 0:
            cast(asyncio.ReadTransport, transport).pause_reading()
            self.reader.feed_eof()
            self._eof_fed = True

    async def serve(self) -> None:
        try:
            while data := await self.reader.read(READ_SIZE):
                report_read(self.config, self.peer, len(data))
                self.writer.write(data)
                await self.writer.drain()
                if self._stopping:
                    self._finish_if_idle()
        except ConnectionError:
            pass  # the peer reset: nothing left to echo to
        finally:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            if not self.closed.done():
                self.closed.set_result(None)


def streams_callback(
    config: ServerConfig,
    connections: ConnectionSet,
    origin: Origin | None = None,
    mode: ServerMode | None = None,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    chosen = mode or server_mode(config)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        apply_socket_options(writer.transport, config)
        writer.transport.set_write_buffer_limits(high=config.high_water)
        if not chosen.framed:
            raw = RawStreamConnection(config, reader, writer, origin)
            if connections.admit(raw):
                await raw.serve()
            else:
                writer.close()
            return
        conn = StreamConnection(config, chosen, reader, writer, origin)
        if connections.admit(conn):
            await conn.serve(config, chosen, connections.state)
            return
        async with conn.out:
            busy = chosen.busy_reply()
            if busy is not None:
                conn.out.write_frame(busy)
        conn.finished()

    return on_connection


def streams_factory(
    config: ServerConfig, connections: ConnectionSet
) -> Callable[[], asyncio.BaseProtocol]:
    """What asyncio.start_server builds per connection (a reader and its
    protocol), made here so the PROXY header gate can go in front of it."""
    loop = asyncio.get_running_loop()
    mode = server_mode(config)

    def inner(origin: Origin | None) -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        callback = streams_callback(config, connections, origin, mode)
        return asyncio.StreamReaderProtocol(reader, callback, loop=loop)

    return behind_proxy(config, connections, inner)
