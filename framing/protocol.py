"""asyncio.BufferedProtocol adapter: the fast path from socket to handler.

A translator, no policy of its own: transport callbacks become inputs of
the connection's ConnectionPolicy (framing/connection.py: frame timeout,
graceful drain, error reply, discard after FIN), and the actions it returns
become transport calls and one loop timer.

Data path: the loop's recv_into writes into the memory the policy offers
(the decoder's receive buffer, or a large payload's own bytearray);
buffer_updated() parses, and when the policy has nothing to hold or time
(the common read: ConnectionPolicy.read_ready) the read's payloads go
straight to the handler and its replies straight to one transport.write()
(or one writelines, a writev, where large payloads go unjoined); otherwise
they go DELIVERY_SLICE at a time through next_frames(). Per small frame that
is one user-space copy in (buffer -> bytes; none with views=True, where the
payload is a view of the buffer) and one out (into the reply buffer; none
when the replies are those views in order, an echo: wire_region, while the
write buffer is empty, so that a queued write pins at most one receive
buffer); per large
frame none, or one when it arrived whole in one read (receive buffer -> its
bytearray).

Flow control both ways: when the transport's write buffer passes
`high_water` (a peer that sends but does not read), the policy pauses
reading and holds decoded frames until it drains below a quarter of it, so
memory stays bounded by high_water plus one slice of replies; producers that
send on their own await `drain()`. Works on the default loop and on uvloop
(0.11+ supports BufferedProtocol).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import cast

from framing._codec import PACKED_ALL, pack_frames, wire_region
from framing.batch import BatchHandler
from framing.connection import (
    CLOSE,
    DEFAULT_DISCARD_WINDOW,
    DEFAULT_FRAME_TIMEOUT,
    PAUSE_READING,
    RESUME_READING,
    WRITE_EOF,
    ArmTimer,
    ConnectionPolicy,
    ErrorReply,
    Write,
)
from framing.decoder import (
    DEFAULT_LARGE_FRAME,
    DEFAULT_MAX_FRAME_LENGTH,
    BytesLike,
    FrameDecoder,
    Payload,
)
from framing.encoder import write_as_is, write_frames
from framing.errors import FramingError
from framing.observer import NULL_OBSERVER, ConnectionObserver
from framing.transport import WriteLines, peer_name, unread_kernel_bytes, writev_lines

log = logging.getLogger("framing")

DEFAULT_HIGH_WATER = 1024 * 1024
_SEQUENCES = (list, tuple)  # taken as they are; `list | tuple` would be built per call


class FramedProtocol(asyncio.BufferedProtocol):
    """Length-prefixed frames over a stream transport; see the module docstring.

    `handler(payloads) -> replies` answers every batch (or override
    `frames_received`); `error_reply(error) -> payload | None` is what a
    peer dropped for bad framing is told (or override `error_reply`).
    `views=True` hands small payloads over as read-only memoryviews of the
    receive buffer instead of bytes (no copy; FrameDecoder says what keeping
    one costs).
    """

    def __init__(
        self,
        handler: BatchHandler | None = None,
        *,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        high_water: int = DEFAULT_HIGH_WATER,
        large_frame: int = DEFAULT_LARGE_FRAME,
        discard_window: float = DEFAULT_DISCARD_WINDOW,
        error_reply: ErrorReply | None = None,
        observer: ConnectionObserver = NULL_OBSERVER,
        views: bool = False,
    ) -> None:
        if high_water < 1:
            raise ValueError(f"high_water must be at least 1 byte, not {high_water}")
        self._handler = handler
        self._error_reply = error_reply
        self.max_frame_length = max_frame_length
        self.high_water = high_water
        self.large_frame = large_frame
        self.observer = observer
        self.decoder = FrameDecoder(max_frame_length, large_frame=large_frame, views=views)
        self.policy = ConnectionPolicy(
            self.decoder,
            frame_timeout=frame_timeout,
            discard_window=discard_window,
            error_reply=self.error_reply,
            observer=observer,
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writelines: WriteLines | None = None
        self._write_as_is = large_frame
        #: the handler, when frames_received is not overridden: _deliver calls it
        #: itself, as frames_received would (two calls fewer per read)
        overridden = type(self).frames_received is not FramedProtocol.frames_received
        self._direct_handler = None if overridden else handler
        self._observed = observer is not NULL_OBSERVER

    @property
    def frame_timeout(self) -> float | None:
        return self.policy.frame_timeout

    @property
    def error(self) -> BaseException | None:
        """Why the connection failed (bad framing, a reset, a handler crash), if it did."""
        return self.policy.error

    # -- hooks for subclasses -------------------------------------------
    def frames_received(self, frames: list[Payload]) -> None:
        """Called with every batch of complete payloads; default: handler -> replies."""
        if self._handler is not None:
            replies = self._handler(frames)
            if replies:
                self.send_frames(replies)

    def error_reply(self, error: FramingError) -> BytesLike | None:
        """A last frame telling the peer why it is dropped (None: say nothing)."""
        return None if self._error_reply is None else self._error_reply(error)

    def describe_peer(self, transport: asyncio.BaseTransport) -> str:
        """How errors and logs name the peer (a server behind a balancer names
        the client the PROXY header gave instead)."""
        return peer_name(transport)

    # -- sending ---------------------------------------------------------
    def send_frames(self, payloads: Iterable[BytesLike]) -> None:
        """Frame and write `payloads` (dropped once the connection is closing).

        FrameTooLarge for a payload over the limit, after the ones before it.
        """
        transport = self.transport
        if transport is None or not self.policy.live or transport.is_closing():
            return  # closing, or our FIN is out: nothing more may be written
        items = payloads if isinstance(payloads, _SEQUENCES) else list(payloads)
        if self._observed:
            self.observer.frames_out(items)
        region = wire_region(items, self.max_frame_length)
        if region is not None and not transport.get_write_buffer_size():
            transport.write(region)  # lent views handed back in order: no packing (write_frames)
            return
        try:  # the common batch inline: small payloads, one buffer, one write
            data, _, status = pack_frames(items, 0, self.max_frame_length, self._write_as_is)
        except TypeError:
            status = -1  # write_frames names the payload that is not bytes
        if status == PACKED_ALL:
            if data:
                transport.write(data)
            return
        write_frames(
            transport.write, items, self.max_frame_length, self._write_as_is, self._writelines
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

    # -- asyncio callbacks: each one input to the policy, then its actions --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = self.describe_peer(transport)
        self._writelines = writev_lines(transport)
        self._write_as_is = write_as_is(self.large_frame, self._writelines is not None)
        self.transport.set_write_buffer_limits(high=self.high_water, low=self.high_water // 4)
        self.policy.unread = lambda: unread_kernel_bytes(transport)
        self.policy.can_write_eof = self.transport.can_write_eof()
        self.policy.connection_made(self.peer)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.policy.reading:  # the decoder's memory, one call fewer
            return self.decoder.get_buffer(sizehint)
        return self.policy.get_buffer(sizehint)  # a scratch buffer: input is dropped

    def buffer_updated(self, nbytes: int) -> None:
        policy = self.policy
        frames = policy.read_ready(nbytes, self._loop.time())
        if frames is None:  # held (or none): the general path
            self._run()
            return
        if frames:  # the fast path: straight to the handler, replies straight out
            self._deliver(frames)
        if policy.due:
            self._apply()

    def eof_received(self) -> bool:
        self.policy.end_of_stream(self._loop.time())
        self._run()
        return not self.policy.closed  # keep the transport while the policy needs it

    def pause_writing(self) -> None:
        self._write_paused = True
        self.policy.writes_paused()
        self._apply()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.policy.writes_resumed(self._loop.time())
        self._run()
        if not self._write_paused:  # the held frames' replies may have filled it again
            self._wake_drainers(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.policy.connection_lost(exc)
        self._apply()
        self._wake_drainers(exc or ConnectionResetError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- shutdown --------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Close with FIN once every frame already received (by us or by the
        kernel) has its reply; the runner aborts what is left at its deadline."""
        self.policy.shutdown_requested(self._loop.time())
        self._run()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -------------------------------------------------------
    def _run(self) -> None:
        """Hand every slice the policy releases to the handler, then act."""
        policy = self.policy
        while frames := policy.next_frames():
            self._deliver(frames)
        if policy.due:
            self._apply()

    def _deliver(self, frames: list[Payload]) -> None:
        """Run the handler on one slice; its failure closes only this connection."""
        try:
            handler = self._direct_handler
            if handler is None:
                self.frames_received(frames)
            elif replies := handler(frames):
                self.send_frames(replies)
        except FramingError as error:  # e.g. a reply over the frame limit
            self.policy.reject(error, self._loop.time())
        except Exception as error:
            self.policy.abandon(error)

    def _apply(self) -> None:
        transport = self.transport
        for action in self.policy.actions():
            if isinstance(action, ArmTimer):
                self._arm(action.at)
            elif transport is None or transport.is_closing():
                continue
            elif isinstance(action, Write):
                transport.write(action.data)
            elif action is WRITE_EOF:
                transport.write_eof()
            elif action is CLOSE:
                transport.close()
            elif action is PAUSE_READING:
                transport.pause_reading()
            elif action is RESUME_READING:
                transport.resume_reading()

    def _arm(self, at: float | None) -> None:
        """One loop timer, moved only when it would fire late: a timer that
        fires early costs one clock() call, which asks for the real deadline,
        so pipelined reads do not re-arm a timer each."""
        timer = self._timer
        if timer is not None and not self.policy.closed and (at is None or timer.when() <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.policy.clock(self._loop.time())
        self._run()

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
