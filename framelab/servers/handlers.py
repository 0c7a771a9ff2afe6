"""Per-connection handlers for each mode (raw, framed, msgpack) and I/O style.

The protocol style subclasses framing.FramedProtocol (the library's fast
path); the streams style runs one task per connection over FrameReader /
FrameWriter. Both reach the same application code: `echo_batch` for framed
mode, msgpack_app for msgpack mode, so the two styles differ only in I/O.
Raw mode echoes bytes as read and reports each read's size (the evidence for
sticky packets).

Failure behaviour is the same in both styles: bad framing is logged with the
peer, msgpack clients get a last error message, then our side sends FIN and
input is discarded until the peer's FIN or DEFAULT_LINGER seconds (so the
close sends no RST that could destroy replies not yet read); refused
requests are logged with the peer, a few per connection.
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
from framelab.servers.proxy_gate import InnerFactory, Origin, ProxyHeaderGate, origin_of
from framing.decoder import BytesLike, FrameDecoder, Payload
from framing.errors import FrameTimeout, FramingError, MessageError, TruncatedFrame
from framing.messages import MessageCodec, message_handler
from framing.protocol import (
    DEFAULT_LINGER,
    BatchHandler,
    FramedProtocol,
    log_lost_connection,
    unread_kernel_bytes,
)
from framing.streams import READ_SIZE, FrameReader, FrameWriter

log = logging.getLogger("framelab.server")


def report_read(config: ServerConfig, peer: str, size: int) -> None:
    """The raw echo's evidence of sticky packets: each read's size, logged and/or observed."""
    if config.log_reads:
        log.info("read %d bytes from %s", size, peer)
    if config.on_read is not None:
        config.on_read(peer, size)


def echo_batch(frames: list[Payload]) -> list[Payload]:
    """The framed echo's handler: every frame, as its own message, back."""
    return frames


class RefusalLog:
    """Logs one connection's refused requests with the peer: the first
    LIMIT at INFO, then one line saying the rest go unlogged, so a client
    sending junk in a loop cannot turn the server into a log writer."""

    LIMIT = 10

    def __init__(self) -> None:
        self.peer = "?"
        self.count = 0

    def refused(self, reply: dict[str, Any]) -> None:
        self.count += 1
        if self.count <= self.LIMIT:
            error = reply["error"]
            log.info("peer %s: request refused: %s: %s", self.peer, error["type"], error["message"])
        elif self.count == self.LIMIT + 1:
            log.info("peer %s: more requests refused; not logging the rest", self.peer)


def application(
    config: ServerConfig,
    refusals: RefusalLog | None = None,
    session: msgpack_app.Session = msgpack_app.NO_SESSION,
) -> BatchHandler:
    """The batch handler for framed or msgpack mode (one per connection in
    msgpack mode, so refused requests are logged with the peer, and `peer`
    and `health` answer from the connection's session)."""
    if config.mode != "msgpack":
        return echo_batch
    note = refusals or RefusalLog()

    def handle(request: Any) -> dict[str, Any]:
        reply = msgpack_app.handle_request(request, session)
        if not reply["ok"]:
            note.refused(reply)
        return reply

    def on_bad_message(error: MessageError) -> dict[str, Any]:
        reply = msgpack_app.reply_to_bad_message(error)
        note.refused(reply)
        return reply

    return message_handler(MessageCodec(config.max_frame), handle, on_bad_message)


def last_words(config: ServerConfig, error: FramingError) -> bytes | None:
    """What a dropped client is told (msgpack mode only; raw frames carry no errors)."""
    if config.mode != "msgpack":
        return None
    return MessageCodec(config.max_frame).encode(msgpack_app.reply_to_framing_error(error))


def busy_message(config: ServerConfig) -> bytes | None:
    if config.mode != "msgpack":
        return None
    reply = msgpack_app.error("busy", "too many connections; try again later")
    return MessageCodec(config.max_frame).encode(reply)


class FrameWatchdog:
    """The frame timeout for the streams style, one timer per connection.

    Every `timeout` seconds it looks at the decoder: a frame that was
    incomplete at the last look and still is, with no frame completed in
    between, is abandoned: the task is cancelled and FrameTimeout raised in
    it instead. A frame thus gets between 1x and 2x the timeout after its
    first byte; time between frames is not limited (keep-alive). Cheaper
    than a deadline per read: waiting on each frame with a timeout costs a
    task and a wait per frame, which halved the streams server's rate.
    """

    def __init__(self, decoder: FrameDecoder, timeout: float | None) -> None:
        self.decoder = decoder
        self.timeout = timeout
        self.expired: FrameTimeout | None = None
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._partial_at: int | None = None  # frames_decoded at the last look, if in a frame

    def __enter__(self) -> FrameWatchdog:
        if self.timeout is not None:
            self._task = asyncio.current_task()
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._look)
        return self

    def _look(self) -> None:
        assert self.timeout is not None and self._task is not None
        decoder = self.decoder
        if decoder.in_frame and self._partial_at == decoder.frames_decoded:
            self.expired = FrameTimeout(decoder.buffered, self.timeout)
            self._task.cancel()
            return
        self._partial_at = decoder.frames_decoded if decoder.in_frame else None
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._look)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.expired is not None and et is asyncio.CancelledError:
            assert self._task is not None
            self._task.uncancel()
            raise self.expired from None


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
    """FramedProtocol plus what a server adds: options, admission, last words."""

    def __init__(
        self, config: ServerConfig, connections: ConnectionSet, origin: Origin | None = None
    ) -> None:
        self.refusals = RefusalLog()
        self.origin = origin
        self.session = msgpack_app.Session(state=connections.state)
        super().__init__(
            application(config, self.refusals, self.session),
            max_frame_length=config.max_frame,
            frame_timeout=config.frame_timeout,
            high_water=config.high_water,
        )
        self.config = config
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        origin = self.origin or origin_of(transport)
        self.peer = self.refusals.peer = origin.client
        self.session.peer = origin.as_result()
        apply_socket_options(transport, self.config)
        if not self.connections.admit(self):
            busy = busy_message(self.config)
            if busy is not None:
                self.send_frame(busy)
            transport.close()

    def error_reply(self, error: FramingError) -> BytesLike | None:
        return last_words(self.config, error)


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
    if config.mode == "raw":
        return behind_proxy(config, connections, lambda o: RawEchoProtocol(config, connections, o))
    return behind_proxy(config, connections, lambda o: ServerFramedProtocol(config, connections, o))


# -- streams style -----------------------------------------------------------
class StreamConnection:
    """One connection served by a task over asyncio streams."""

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
        self.origin = origin or origin_of(writer.transport)
        self.peer = self.origin.client
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames = FrameReader(reader, config.max_frame, peer=self.peer)
        self._stopping = False
        self._eof_fed = False
        self._sink: _Discard | None = None  # set once _linger_close took the transport

    def begin_shutdown(self) -> None:
        self._stopping = True
        self._finish_if_idle()

    def abort(self) -> None:
        self.writer.transport.abort()

    def _finish_if_idle(self) -> None:
        """Stop taking bytes from the kernel once none are waiting there; the
        reader then returns what asyncio already buffered, then end of stream."""
        if self._eof_fed or self.frames.decoder.in_frame:
            return
        transport = self.writer.transport
        if unread_kernel_bytes(transport) == 0:
            cast(asyncio.ReadTransport, transport).pause_reading()
            self.reader.feed_eof()
            self._eof_fed = True

    async def serve(self, handler: BatchHandler | None) -> None:
        try:
            if handler is None:
                await self._serve_raw()
            else:
                await self._serve_frames(handler)
            if self._eof_fed:  # graceful shutdown: every received frame has its reply
                await self._linger_close()
        except FramingError as error:
            error.peer = self.peer
            log.warning("%s; closing the connection", error)
            words = last_words(self.config, error)
            if words is not None:
                FrameWriter(self.writer, self.config.max_frame).write_frame(words)
            if not isinstance(error, TruncatedFrame):  # the peer may still be sending
                await self._linger_close()
        except ConnectionError as error:
            log_lost_connection(self.peer, error, self.frames.decoder)
        finally:
            await self._close()

    async def _serve_raw(self) -> None:
        while data := await self.reader.read(READ_SIZE):
            report_read(self.config, self.peer, len(data))
            self.writer.write(data)
            await self.writer.drain()
            if self._stopping:
                self._finish_if_idle()

    async def _serve_frames(self, handler: BatchHandler) -> None:
        out = FrameWriter(self.writer, self.config.max_frame)
        with FrameWatchdog(self.frames.decoder, self.config.frame_timeout):
            while True:
                first = await self.frames.read_frame()
                if first is None:
                    return
                batch = [first, *self.frames.read_ready()]
                replies = handler(batch)
                if replies:
                    out.write_frames(replies)
                    await out.drain()
                if self._stopping:
                    self._finish_if_idle()

    async def _linger_close(self) -> None:
        """FIN after what is buffered, then discard input until the peer's FIN
        or DEFAULT_LINGER seconds: a close() with unread input sends RST,
        which can destroy replies the peer has not read yet. The stream
        reader is done with, so a discarding protocol takes the transport."""
        transport = cast(asyncio.Transport, self.writer.transport)
        if transport.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        if transport.is_closing() or not transport.can_write_eof():
            return
        self._sink = sink = _Discard()
        transport.set_protocol(sink)
        transport.write_eof()
        transport.resume_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sink.done), DEFAULT_LINGER)
        transport.close()

    async def _close(self) -> None:
        try:
            self.writer.close()
            if self._sink is not None:  # wait_closed() would wait on the old protocol
                await self._sink.done
            else:
                await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(None)


class _Discard(asyncio.Protocol):
    """Reads and drops everything until the peer's FIN (see _linger_close)."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def streams_callback(
    config: ServerConfig, connections: ConnectionSet, origin: Origin | None = None
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        apply_socket_options(writer.transport, config)
        writer.transport.set_write_buffer_limits(high=config.high_water)
        conn = StreamConnection(config, reader, writer, origin)
        if not connections.admit(conn):
            busy = busy_message(config)
            if busy is not None:
                FrameWriter(writer, config.max_frame).write_frame(busy)
            await conn._close()
            return
        refusals = RefusalLog()
        refusals.peer = conn.peer
        session = msgpack_app.Session(conn.origin.as_result(), connections.state)
        handler = None if config.mode == "raw" else application(config, refusals, session)
        await conn.serve(handler)

    return on_connection


def streams_factory(
    config: ServerConfig, connections: ConnectionSet
) -> Callable[[], asyncio.BaseProtocol]:
    """What asyncio.start_server builds per connection (a reader and its
    protocol), made here so the PROXY header gate can go in front of it."""
    loop = asyncio.get_running_loop()

    def inner(origin: Origin | None) -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        callback = streams_callback(config, connections, origin)
        return asyncio.StreamReaderProtocol(reader, callback, loop=loop)

    return behind_proxy(config, connections, inner)
