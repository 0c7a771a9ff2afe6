"""asyncio.BufferedProtocol adapter: the fast path from socket to handler.

Data path: the loop's recv_into writes into FrameDecoder.get_buffer() (the
receive buffer, or a large payload's own bytearray); buffer_updated() parses
and hands the batch of finished payloads to `frames_received`; the replies
go out through one transport.write() per batch (large payloads unjoined).
Per small frame that is one user-space copy in (buffer -> bytes) and one out
(into the reply buffer); per large frame, none.

Flow control both ways: when the transport's write buffer passes its
high-water mark (a peer that sends but does not read), reading pauses until
it drains, and frames already decoded wait (handed over DELIVERY_SLICE at a
time), so memory stays bounded by high_water plus one slice of replies;
producers that send on their own await `drain()`. A frame must complete
within `frame_timeout` seconds of its first byte (slow loris); idle time
between frames is allowed (keep-alive).
Bad framing (a header over the limit, a frame that times out, a stream that
ends inside a frame) closes only this connection: the error is logged with
the peer, `error_reply()` may send a last frame saying why, our side is shut
(FIN) and input is discarded until the peer closes or `linger` passes: a
close() with unread input would send RST, which can destroy what the peer
has not read yet. Graceful shutdown ends the same way, once every frame
already received has its reply.
Works on the default loop and on uvloop (0.11+ supports BufferedProtocol).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import sys
import termios
from collections.abc import Callable, Iterable
from typing import cast

from framing.decoder import (
    DEFAULT_LARGE_FRAME,
    DEFAULT_MAX_FRAME_LENGTH,
    BytesLike,
    FrameDecoder,
    Payload,
)
from framing.encoder import write_frames
from framing.errors import FrameTimeout, FramingError

log = logging.getLogger("framing")

#: the batch handler: payloads in, replies out (None or [] for no reply)
BatchHandler = Callable[[list[Payload]], Iterable[BytesLike] | None]
DEFAULT_HIGH_WATER = 1024 * 1024
DEFAULT_FRAME_TIMEOUT = 30.0
DEFAULT_LINGER = 2.0
_DISCARD = bytearray(64 * 1024)
#: frames handed to the handler at a time when a read completed many: between
#: slices the write buffer is checked, so replies cannot outgrow high_water by
#: more than one slice's worth, however much a handler's replies amplify
DELIVERY_SLICE = 64


def peer_name(transport: asyncio.BaseTransport) -> str:
    """'host:port' of the peer, for error messages and logs."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        return f"{host}:{peer[1]}"
    return str(peer)


def writev_lines(transport: asyncio.BaseTransport) -> Callable[[list[BytesLike]], object] | None:
    """transport.writelines where it is one gathering write with no join
    (uvloop; asyncio from 3.12), else None: asyncio 3.11 joins (copies)."""
    if sys.version_info >= (3, 12) or type(transport).__module__.startswith("uvloop"):
        return cast(asyncio.WriteTransport, transport).writelines
    return None


def unread_kernel_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD), 0 if unknown."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    value: int = struct.unpack("i", raw)[0]
    return value


def per_frame(handler: Callable[[Payload], BytesLike | None]) -> BatchHandler:
    """Adapt a one-frame-at-a-time handler (reply or None) to a batch handler."""

    def batch(frames: list[Payload]) -> list[BytesLike]:
        replies = []
        for frame in frames:
            reply = handler(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    return batch


class FramedProtocol(asyncio.BufferedProtocol):
    """Length-prefixed frames over a stream transport; see the module docstring."""

    def __init__(
        self,
        handler: BatchHandler | None = None,
        *,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        high_water: int = DEFAULT_HIGH_WATER,
        large_frame: int = DEFAULT_LARGE_FRAME,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._handler = handler
        self.max_frame_length = max_frame_length
        self.frame_timeout = frame_timeout
        self.high_water = high_water
        self.linger = linger
        self.large_frame = large_frame
        self.decoder = FrameDecoder(max_frame_length, large_frame=large_frame)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._discarding = False
        self._shutting_down = False
        self._pending: list[Payload] = []  # frames held while writes are paused
        self._pending_at = 0
        self._frame_timer: asyncio.TimerHandle | None = None
        self._timed_frame = -1  # frames_decoded when the timer was armed
        self._linger_timer: asyncio.TimerHandle | None = None
        self._writelines: Callable[[list[BytesLike]], object] | None = None

    # -- hooks for subclasses -------------------------------------------
    def frames_received(self, frames: list[Payload]) -> None:
        """Called with every batch of complete payloads; default: handler -> replies."""
        if self._handler is not None:
            replies = self._handler(frames)
            if replies:
                self.send_frames(replies)

    def error_reply(self, error: FramingError) -> BytesLike | None:
        """A last frame telling the peer why it is dropped (None: say nothing)."""
        return None

    # -- sending ---------------------------------------------------------
    def send_frames(self, payloads: Iterable[BytesLike]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        write_frames(
            self.transport.write,
            payloads,
            self.max_frame_length,
            self.large_frame,
            self._writelines,
        )

    def send_frame(self, payload: BytesLike) -> None:
        self.send_frames((payload,))

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark."""
        if self.closed.done():
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = peer_name(transport)
        self._writelines = writev_lines(transport)
        self.transport.set_write_buffer_limits(high=self.high_water, low=self.high_water // 4)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._discarding:
            return memoryview(_DISCARD)
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._discarding:
            return
        try:
            frames = self.decoder.buffer_updated(nbytes)
        except FramingError as error:
            self._reject(error)
            return
        if frames:
            if self._pending or len(frames) > DELIVERY_SLICE:
                self._pending += frames
                self._deliver_pending()
            else:
                self._deliver(frames)
        if self.decoder.failed is not None and not self._discarding:
            self._reject(self.decoder.failed)  # after answering the frames before it
            return
        if self.frame_timeout is not None:
            self._watch_partial_frame()
        if self._shutting_down:
            self._close_if_idle()

    def eof_received(self) -> bool:
        if self._discarding:
            return False
        try:
            self.decoder.end_of_stream()
        except FramingError as error:
            error.peer = self.peer
            self.error = error
            log.warning("%s; closing the connection", error)
            reply = self.error_reply(error)
            if reply is not None:  # the peer only half-closed: it can still read
                self.send_frame(reply)
        return False  # let the transport close once our replies are flushed

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._deliver_pending()
        if self._write_paused:
            return  # the held frames' replies filled the buffer again
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._wake_drainers(None)
        if self._shutting_down:
            self._close_if_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._frame_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if exc is not None and self.error is None:
            self.error = exc
            log_lost_connection(self.peer, exc, self.decoder)
        self._wake_drainers(exc or ConnectionResetError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- shutdown --------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Close with FIN once no frame is half-received and nothing is unread.

        Every frame already received (by us or by the kernel) gets its reply
        first; the runner aborts whatever is left when its deadline passes.
        """
        self._shutting_down = True
        self._close_if_idle()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -------------------------------------------------------
    def _deliver(self, frames: list[Payload]) -> None:
        """Run the handler on one slice; its failure closes only this connection."""
        try:
            self.frames_received(frames)
        except FramingError as error:  # e.g. a reply over the frame limit
            self._reject(error)
        except Exception as error:
            log.exception("handler failed for peer %s; closing the connection", self.peer)
            self._abandon(error)

    def _deliver_pending(self) -> None:
        """Hand held frames over a slice at a time, stopping while writes are paused."""
        pending = self._pending
        while self._pending_at < len(pending) and not self._write_paused and not self._discarding:
            start = self._pending_at
            self._pending_at = start + DELIVERY_SLICE
            self._deliver(pending[start : self._pending_at])
        if self._pending_at >= len(pending) or self._discarding:
            self._pending = []
            self._pending_at = 0

    def _close_if_idle(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._pending or self.decoder.in_frame:
            return
        if unread_kernel_bytes(transport) == 0:
            self._linger_close(transport)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def _watch_partial_frame(self) -> None:
        """Arm one timer per incomplete frame; re-armed only when it fires."""
        if self.decoder.in_frame:
            if self._frame_timer is None:
                self._arm_frame_timer()
        elif self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _arm_frame_timer(self) -> None:
        assert self.frame_timeout is not None
        self._timed_frame = self.decoder.frames_decoded
        self._frame_timer = self._loop.call_later(self.frame_timeout, self._frame_timed_out)

    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        if not self.decoder.in_frame:
            return
        if self.decoder.frames_decoded != self._timed_frame:
            self._arm_frame_timer()  # a newer frame: give it its own full timeout
            return
        assert self.frame_timeout is not None
        self._reject(FrameTimeout(self.decoder.buffered, self.frame_timeout))

    def _reject(self, error: FramingError) -> None:
        """Bad framing: log, say why if we can, FIN, discard input, then close."""
        if self._discarding:
            return  # already closing (e.g. a frame timer armed before)
        error.peer = self.peer
        self.error = error
        log.warning("%s; closing the connection", error)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reply = self.error_reply(error)
        if reply is not None:
            self.send_frame(reply)
        self._linger_close(transport)

    def _linger_close(self, transport: asyncio.Transport) -> None:
        """FIN after what is buffered; discard input until the peer's FIN or `linger`."""
        self._discarding = True
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        if transport.can_write_eof():
            transport.write_eof()
            self._linger_timer = self._loop.call_later(self.linger, transport.close)
        else:
            transport.close()

    def _abandon(self, error: BaseException) -> None:
        self.error = error
        if self.transport is not None and not self.transport.is_closing():
            self._discarding = True
            self.transport.close()


def log_lost_connection(peer: str, exc: BaseException, decoder: FrameDecoder) -> None:
    """Log a connection the peer ended abnormally (e.g. a reset), saying
    whether it cut a frame short: a warning then, else only info."""
    if decoder.in_frame:
        log.warning(
            "peer %s: connection lost inside a frame (%d bytes received): %s",
            peer,
            decoder.buffered,
            exc,
        )
    else:
        log.info("peer %s: connection lost: %s", peer, exc)


def set_nodelay(transport: asyncio.BaseTransport, enabled: bool) -> None:
    """TCP_NODELAY on the transport's socket (asyncio and uvloop turn it on)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))
